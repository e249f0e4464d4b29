"""`make run` collects static files only when something they come from changed: collectstatic
hashes and compresses every file again on each run, seconds of every start."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def needs_collecting(static_root: Path) -> bool:
    # `make -q` answers 1 when the target would be made again, 0 when it is up to date; `-o`
    # leaves out the install's stamp, which a checkout whose pyproject.toml changed since the
    # last install has out of date.
    manifest = static_root / "staticfiles.json"
    env = {**os.environ, "STATIC_ROOT": str(static_root)}
    command = ["make", "-q", "-o", ".venv/.installed", "--no-print-directory", str(manifest)]
    done = subprocess.run(command, cwd=ROOT, env=env, check=False)
    assert done.returncode in (0, 1), done
    return done.returncode == 1


def test_static_files_are_collected_again_only_when_one_changed(tmp_path):
    static_root = tmp_path / "static"
    assert needs_collecting(static_root)  # never collected
    static_root.mkdir()
    manifest = static_root / "staticfiles.json"
    manifest.write_text("{}")
    assert not needs_collecting(static_root)  # collected after every source
    # A project static file newer than the collection (an edit, a pull).
    edited = next(p for p in sorted((ROOT / "static").rglob("*")) if p.is_file())
    was = edited.stat()
    later = manifest.stat().st_mtime + 60
    try:
        os.utime(edited, (later, later))
        assert needs_collecting(static_root)
    finally:
        os.utime(edited, ns=(was.st_atime_ns, was.st_mtime_ns))
