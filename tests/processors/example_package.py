"""Install the example third-party processor package into the running interpreter's environment.

Shared by the processor tests and the end-to-end test that runs a job with it.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "batchhub-processor-example"
DIST_NAME = "batchhub-processor-example"


def ensure_example_installed() -> None:
    """pip-install the example (editable, offline) unless it is there, and make this process
    see it."""
    try:
        distribution(DIST_NAME)
    except PackageNotFoundError:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "-e",
                str(EXAMPLE),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    # The editable install points at the source through a .pth file, which Python reads only at
    # start-up: read it now so that this process can import the package too.
    site.addsitedir(sysconfig.get_paths()["purelib"])
    from jobs.processors.base import reload_registry

    reload_registry()
