#!/usr/bin/env python
from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")
    from django.core.management import execute_from_command_line

    from batchhub.dbfile import refuse_unusable_database

    # Before the command's system checks, which open the database file (batchhub/dbfile.py).
    refuse_unusable_database(sys.argv)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
