from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from batchhub import dbspace


class Command(BaseCommand):
    help = "Create the first user if there is none, and say how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args, url: str, **options):
        User = get_user_model()
        username = os.environ.get("BATCHHUB_ADMIN_USER", "admin")
        lines = [f"BatchHub is starting at {url}"]
        if not User.objects.exists():
            password = os.environ.get("BATCHHUB_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            User.objects.create_superuser(username, "", password)
            if os.environ.get("BATCHHUB_ADMIN_PASSWORD"):
                lines.append(
                    f"Log in as '{username}' with the password in BATCHHUB_ADMIN_PASSWORD."
                )
            else:
                lines.append(f"Log in as '{username}' with password: {password}")
                lines.append(
                    "(shown this once; change it with: "
                    f".venv/bin/python manage.py changepassword {username})"
                )
        else:
            lines.append(
                "Log in with an existing account (reset a password with: "
                ".venv/bin/python manage.py changepassword USER)."
            )
        width = max(len(line) for line in lines)
        self.stdout.write("=" * width)
        for line in lines:
            self.stdout.write(line)
        self.stdout.write("=" * width)
        # A database file that keeps the space of deleted jobs and cannot give it back itself.
        note = dbspace.start_note()
        if note:
            self.stdout.write(note)
