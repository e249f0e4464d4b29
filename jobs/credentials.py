"""Per-user provider credentials (API keys for LLM providers and other outside services).

Secrets are encrypted with Fernet (AES-128-CBC + HMAC-SHA256) before they reach the database. The
key is ``BATCHHUB_ENCRYPTION_KEY`` when set (a Fernet key, or any long passphrase that is then
stretched with HKDF), else it is derived from ``SECRET_KEY``; keys derived from
``SECRET_KEY_FALLBACKS`` still decrypt, so rotating SECRET_KEY the Django way keeps saved
credentials readable. A secret leaves this module only towards a processor on a worker; pages and
the API show its name and a masked hint.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from .models import ProviderCredential

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,48}[a-z0-9])?$")
MAX_SECRET_LENGTH = 4096
_HKDF_INFO = b"batchhub provider credentials v1"


class CredentialError(LookupError):
    """A credential is missing, unreadable or invalid; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    name: str
    hint: str  # e.g. "…abcd": enough to tell two keys apart, useless to an attacker
    readable: bool  # False when the encryption key changed and the secret must be saved again
    created_at: datetime
    updated_at: datetime


def _derive(material: str) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        material.encode()
    )
    return base64.urlsafe_b64encode(key)


def _as_fernet_key(configured: str) -> bytes:
    """A configured key: used as is when it is a Fernet key, stretched when it is a passphrase."""
    try:
        if len(base64.urlsafe_b64decode(configured.encode())) == 32:
            return configured.encode()
    except (binascii.Error, ValueError):
        pass
    return _derive(configured)


def _configured_keys() -> tuple[str, ...]:
    explicit = getattr(settings, "BATCHHUB_ENCRYPTION_KEY", None) or os.environ.get(
        "BATCHHUB_ENCRYPTION_KEY", ""
    )
    fallbacks = tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ())
    if explicit:
        # SECRET_KEY still decrypts what was saved before an explicit key was configured.
        return (
            f"explicit:{explicit}",
            f"derived:{settings.SECRET_KEY}",
            *(f"derived:{k}" for k in fallbacks),
        )
    return (f"derived:{settings.SECRET_KEY}", *(f"derived:{k}" for k in fallbacks))


@lru_cache(maxsize=8)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    fernets = []
    for entry in keys:
        kind, _, material = entry.partition(":")
        fernets.append(
            Fernet(_as_fernet_key(material) if kind == "explicit" else _derive(material))
        )
    return MultiFernet(fernets)


def _fernet() -> MultiFernet:
    return _fernet_for(_configured_keys())


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise CredentialError(
            "The saved credential cannot be decrypted (the encryption key changed); save it again."
        ) from None


def mask(secret: str) -> str:
    # Short secrets show nothing: four characters of an eight-character secret is half of it.
    return f"…{secret[-4:]}" if len(secret) >= 12 else "…"


def clean_name(name: str) -> str:
    name = (name or "").strip().lower()
    if not NAME_RE.match(name):
        raise CredentialError(
            "A credential name has 1–50 lowercase letters, digits, '-' or '_', "
            "e.g. openai or my-vllm."
        )
    return name


def clean_secret(secret: str) -> str:
    secret = (secret or "").strip()
    if not secret:
        raise CredentialError("The secret is empty.")
    if len(secret) > MAX_SECRET_LENGTH:
        raise CredentialError(f"The secret is longer than {MAX_SECRET_LENGTH} characters.")
    if any(ch in secret for ch in "\r\n\x00"):
        raise CredentialError("The secret must be one line.")
    return secret


def save_credential(owner, name: str, secret: str) -> tuple[ProviderCredential, bool]:
    """Add a credential, or replace the secret of the one with this name. Returns (it, created)."""
    name = clean_name(name)
    token = encrypt(clean_secret(secret))
    credential, created = ProviderCredential.objects.update_or_create(
        owner=owner, name=name, defaults={"secret": token}
    )
    return credential, created


def delete_credential(owner, name: str) -> bool:
    deleted, _ = ProviderCredential.objects.filter(owner=owner, name=name).delete()
    return bool(deleted)


def list_credentials(owner) -> list[CredentialInfo]:
    infos = []
    for credential in ProviderCredential.objects.filter(owner=owner).order_by("name"):
        try:
            hint, readable = mask(decrypt(credential.secret)), True
        except CredentialError:
            hint, readable = "", False
        infos.append(
            CredentialInfo(
                credential.name, hint, readable, credential.created_at, credential.updated_at
            )
        )
    return infos


def get_secret(owner_id: int | None, name: str) -> str:
    """The plaintext of a user's credential, for a processor running that user's job."""
    if owner_id is None:
        raise CredentialError(f"The credential {name!r} needs a job owner; none is known here.")
    token = (
        ProviderCredential.objects.filter(owner_id=owner_id, name=name)
        .values_list("secret", flat=True)
        .first()
    )
    if token is None:
        raise _missing(name)
    return decrypt(token)


def _missing(name: str) -> CredentialError:
    return CredentialError(
        f"You have no saved credential named {name!r} (Settings → Provider credentials)."
    )


def unusable(owner_id: int | None, wanted: Mapping[str, str]) -> list[dict[str, str]]:
    """``{"param", "message"}`` for each param (``wanted``: param → credential name) naming a
    credential that a job of this owner could not use, so a job is refused when it is created
    instead of failing every row. Another user's credential of that name counts as none: the
    message is the same, so whether it exists is never told. One query for all of them.
    """
    if not wanted:
        return []
    tokens = dict(
        ProviderCredential.objects.filter(
            owner_id=owner_id, name__in=set(wanted.values())
        ).values_list("name", "secret")
    )
    problems = []
    for param, name in wanted.items():
        try:
            if name not in tokens:
                raise _missing(name)
            decrypt(tokens[name])  # a key that changed fails every row just the same
        except CredentialError as exc:
            problems.append({"param": param, "message": str(exc)})
    return problems
