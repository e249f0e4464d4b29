"""factory-boy factories for the objects tests build directly: users, jobs, rows and API keys.

A job made here skips validation and ingest (conftest's `make_job` goes through services when a
test needs those); an API key is made by apikeys.services, the only place that can hash one, and
carries its plaintext as `.raw`.
"""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory, Password

from apikeys.models import APIKey
from apikeys.services import create_key
from jobs.models import Job, JobStatus, Row, RowStatus


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user-{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = Password("pw-user-123")


class JobFactory(DjangoModelFactory):
    """A job as the engine leaves it; `rows` sets its counts (add the rows with `add_rows`)."""

    class Meta:
        model = Job

    class Params:
        rows = 3

    owner = factory.SubFactory(UserFactory)
    processor = "template"
    params = factory.LazyFunction(lambda: {"template": "{a}"})
    columns = factory.LazyFunction(lambda: ["a", "b"])
    status = JobStatus.COMPLETED
    total = factory.SelfAttribute("rows")
    succeeded = factory.SelfAttribute("rows")


class RowFactory(DjangoModelFactory):
    """One row; `ref` is its 1-based line number and `data` one value per job column."""

    class Meta:
        model = Row

    job = factory.SubFactory(JobFactory)
    index = factory.Sequence(int)
    ref = factory.LazyAttribute(lambda row: str(row.index + 1))
    data = factory.LazyAttribute(
        lambda row: [f"{column}{row.index}" for column in (row.job.columns or ["a"])]
    )
    status = RowStatus.SUCCEEDED


def add_rows(job: Job, count: int, **fields) -> list[Row]:
    """`count` rows of `job` (indexes 0…count-1) in one insert; `fields` may be callables of i."""
    rows = [
        RowFactory.build(
            job=job,
            index=i,
            **{name: value(i) if callable(value) else value for name, value in fields.items()},
        )
        for i in range(count)
    ]
    return Row.objects.bulk_create(rows)


class APIKeyFactory(DjangoModelFactory):
    class Meta:
        model = APIKey

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"key-{n}")
    expires_at = None

    @classmethod
    def _create(cls, model_class, owner, name, expires_at=None, **kwargs):
        key, raw = create_key(owner, name, expires_at)
        key.raw = raw
        return key
