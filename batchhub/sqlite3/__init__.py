"""BatchHub's SQLite database backend: Django's, with writers served in turn (base.py)."""
