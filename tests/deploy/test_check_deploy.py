"""`manage.py check --deploy` with the README's production environment is clean but for HSTS and
the HTTPS redirect, which the proxy in front does (as the README says)."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the README leaves to the TLS-terminating proxy.
LEFT_TO_THE_PROXY = {"security.W004", "security.W008"}


def readme_production_env() -> dict[str, str]:
    """The variables the README's "Running in production" block exports, placeholders filled."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running in production", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env: dict[str, str] = {}
    for line in block.splitlines():
        if not line.startswith("export "):
            continue
        for word in shlex.split(line.removeprefix("export "), comments=True):
            name, _, value = word.partition("=")
            env[name] = value
    assert {"DATABASE_URL", "SECRET_KEY", "ALLOWED_HOSTS", "BATCHHUB_BEHIND_PROXY"} <= set(env)
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    return {name: value.replace("…", "secret") for name, value in env.items()}


def check_deploy_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CACHE_"))}
    base.pop("CELERY_BROKER_URL", None)
    base.pop("DJANGO_SETTINGS_MODULE", None)
    base.pop("SECRET_KEY", None)
    # Set by the browser tests' conftest (Playwright's sync API in tests); never in production.
    base.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return {**base, **env, "BATCHHUB_DATA_DIR": str(tmp_path)}


def check_deploy(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=check_deploy_env(env, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def collectstatic(env: dict[str, str], tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=check_deploy_env(env, tmp_path),
        check=True,
        timeout=120,
    )


def test_check_deploy_is_clean_but_for_what_the_proxy_does(tmp_path):
    env = readme_production_env()
    collectstatic(env, tmp_path)  # as the README's block does

    result = check_deploy(env, tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    found = set(re.findall(r"\((\w+\.[EW]\d+)\)", output))
    assert found == LEFT_TO_THE_PROXY, output
    readme = (ROOT / "README.md").read_text()
    assert all(code in readme for code in LEFT_TO_THE_PROXY)  # and says why


def test_without_the_proxy_the_cookies_are_not_secure_and_check_says_so(tmp_path):
    env = {**readme_production_env(), "BATCHHUB_BEHIND_PROXY": "0"}

    result = check_deploy(env, tmp_path)

    output = result.stdout + result.stderr
    assert "security.W012" in output and "security.W016" in output


def test_a_generated_secret_key_on_postgresql_is_a_deploy_warning(tmp_path):
    # Each node would generate its own: what one signs (sessions, API key digests), the others
    # refuse with 401.
    env = readme_production_env()
    del env["SECRET_KEY"]

    result = check_deploy(env, tmp_path)

    output = result.stdout + result.stderr
    assert "(batchhub.W001) SECRET_KEY is not set in the environment" in output, output
    assert "the same on every web and worker node" in output
    plain = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=check_deploy_env(env, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plain.returncode == 0 and "batchhub.W001" not in plain.stdout + plain.stderr


def test_a_generated_secret_key_is_fine_on_the_embedded_sqlite(tmp_path):
    env = readme_production_env()
    del env["SECRET_KEY"]
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"

    result = check_deploy(env, tmp_path)

    assert "batchhub.W001" not in result.stdout + result.stderr


def test_static_files_not_collected_is_a_deploy_warning(tmp_path):
    # Pages still render without collectstatic (batchhub/staticfiles.py), but cached briefly and
    # uncompressed: the operator is told the step they missed.
    result = check_deploy(readme_production_env(), tmp_path)

    output = result.stdout + result.stderr
    assert "(batchhub.W002) Static files are not collected" in output, output
    assert "Run `python manage.py collectstatic --noinput`" in output
