# The image compose.yaml builds: the project and its dependencies, static files collected, run as
# an unprivileged user. Every process (web, worker, beat, migrate) is this image with its command.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATCHHUB_DATA_DIR=/var/lib/batchhub

WORKDIR /app
# The dependencies first, in a layer of their own: a change to the code does not fetch them again.
COPY pyproject.toml README.md ./
RUN mkdir batchhub jobs apikeys accounts && pip install . && pip uninstall --yes batchhub
COPY . .
# Editable: the code runs from /app, where its templates and static folders are. Static files
# are collected into the image (no database needed): web nodes serve them with long caching.
RUN pip install --no-deps --editable . \
    && SECRET_KEY=only-to-build-the-image python manage.py collectstatic --noinput --verbosity 0 \
    && useradd --system --home-dir /var/lib/batchhub --shell /usr/sbin/nologin batchhub \
    && chown -R batchhub /var/lib/batchhub

USER batchhub
EXPOSE 8000
CMD ["gunicorn", "batchhub.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", \
     "--worker-class", "batchhub.webworker.ThreadWorker", "--no-control-socket"]
