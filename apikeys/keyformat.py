"""The API key format: generate, parse and digest keys without touching the database.

A key looks like::

    bh_<lookup id>_<secret>_<checksum>
    bh_Ex4mple0_0123456789abcdefghijklmnopqrstuv_2UoHu7   (an example, checksum valid)

- ``bh_``: the product prefix, so a leaked key is recognisable (secret scanners, log greps).
- lookup id: 8 base62 characters from ``secrets``; public, stored in clear and unique, it finds the
  row in one indexed lookup.
- secret: 32 base62 characters from ``secrets`` (~190 bits); never stored.
- checksum: CRC32 of ``bh_<lookup id>_<secret>`` in base62, left-padded to 6 characters (as in
  GitHub's token format). A typo or a truncated copy is rejected before any database query.

The server keeps only the lookup id and an HMAC-SHA256 of the whole key (see ``digest``). A plain
hash would be enough against guessing (the secret has 190 bits), the HMAC adds that a stolen
database alone cannot even confirm a leaked key. No slow password hasher: it would cost hundreds of
milliseconds on every API request and buys nothing for a random 190-bit secret.
"""

from __future__ import annotations

import re
import secrets
import string
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.utils.crypto import salted_hmac

PREFIX = "bh"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
LOOKUP_LENGTH = 8
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so any CRC32 fits

KEY_RE = re.compile(
    rf"^{PREFIX}_([0-9A-Za-z]{{{LOOKUP_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})"
    rf"_([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)
KEY_LENGTH = len(PREFIX) + 3 + LOOKUP_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH

# Domain separation: the same SECRET_KEY also signs sessions and other things.
_HMAC_SALT = "batchhub.apikeys.digest"


@dataclass(frozen=True, slots=True)
class ParsedKey:
    raw: str
    lookup_id: str
    secret: str


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def base62(number: int, width: int) -> str:
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars)).rjust(width, ALPHABET[0])


def checksum(body: str) -> str:
    return base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def new_lookup_id() -> str:
    return _random_base62(LOOKUP_LENGTH)


def build(lookup_id: str, secret: str | None = None) -> str:
    body = f"{PREFIX}_{lookup_id}_{secret or _random_base62(SECRET_LENGTH)}"
    return f"{body}_{checksum(body)}"


def parse(raw: str) -> ParsedKey | None:
    """The key's parts if it is well formed and its checksum matches, else None. No I/O."""
    if len(raw) != KEY_LENGTH:  # cheap reject before the regex, e.g. a pasted megabyte
        return None
    match = KEY_RE.match(raw)
    if match is None:
        return None
    lookup_id, secret, check = match.groups()
    if check != checksum(raw[: -CHECKSUM_LENGTH - 1]):
        return None
    return ParsedKey(raw=raw, lookup_id=lookup_id, secret=secret)


def display_prefix(lookup_id: str) -> str:
    """What the page and the API show for a key: enough to recognise it, useless to use it."""
    return f"{PREFIX}_{lookup_id}_…"


def digest(raw: str, secret: str | None = None) -> str:
    """HMAC-SHA256 (hex) of the whole key under SECRET_KEY, or under ``secret`` (a fallback).

    SECRET_KEY rather than a dedicated setting: it is already required, kept secret and generated
    on first start in the embedded setup, and Django's SECRET_KEY_FALLBACKS gives a rotation path
    (services.authenticate_key re-digests a key that still matches a fallback).
    """
    return salted_hmac(
        _HMAC_SALT, raw, secret=secret or settings.SECRET_KEY, algorithm="sha256"
    ).hexdigest()
