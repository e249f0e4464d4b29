"""A bad value in the environment stops start-up with a message naming the variable (README's
configuration), instead of passing and breaking requests or workers later."""

from __future__ import annotations

import importlib.util

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.throttling import SimpleRateThrottle

from batchhub import envconfig

RATES = ["BATCHHUB_RATE_READ", "BATCHHUB_RATE_CREATE", "BATCHHUB_RATE_CONTROL"]
RATES += ["BATCHHUB_RATE_DOWNLOAD"]


@pytest.fixture
def load_settings(monkeypatch, tmp_path):
    """batchhub.settings read afresh under the given environment (nothing outside tmp_path)."""
    monkeypatch.setenv("BATCHHUB_TESTING", "1")
    monkeypatch.setenv("BATCHHUB_DATA_DIR", str(tmp_path))

    def load(**env: str) -> dict:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        # A module of its own, not the one in sys.modules that the suite runs with.
        spec = importlib.util.find_spec("batchhub.settings")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return vars(module)

    return load


def drf_parse(rate: str) -> tuple[int, int]:
    return SimpleRateThrottle.parse_rate(None, rate)


@pytest.mark.parametrize("name", RATES)
@pytest.mark.parametrize(
    "value", ["lots", "100", "100/fortnight", "100/month", "0/min", "-5/min", "1.5/min", "/min"]
)
def test_a_rate_drf_would_misread_stops_start_up(load_settings, name, value):
    with pytest.raises(ImproperlyConfigured, match=f"^{name}={value!r}"):
        load_settings(**{name: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100/min", (100, 60)),
        ("5/s", (5, 1)),
        ("10/hours", (10, 3600)),
        ("7/DAY", (7, 86400)),
        (" 30 / minute ", (30, 60)),
    ],
)
def test_a_good_rate_reaches_drf_as_it_reads_it(load_settings, value, expected):
    rates = load_settings(BATCHHUB_RATE_READ=value)["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]

    assert drf_parse(rates["read"]) == expected


def test_every_accepted_unit_means_to_drf_what_it_says():
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for letter, units in envconfig._RATE_UNITS.items():
        for unit in units:
            assert drf_parse(f"3/{unit}") == (3, seconds[letter]), unit


def test_the_default_rates_are_unchanged(load_settings):
    rates = load_settings()["REST_FRAMEWORK"]["DEFAULT_THROTTLE_RATES"]

    assert rates == {
        "read": "1200/min",
        "create": "60/min",
        "control": "300/min",
        "download": "120/min",
    }


@pytest.mark.parametrize("value", ["50", "20", "-1"])
def test_a_nice_outside_0_to_19_stops_start_up(load_settings, value):
    with pytest.raises(ImproperlyConfigured, match=f"^BATCHHUB_WORKER_NICE={value!r}"):
        load_settings(BATCHHUB_WORKER_NICE=value)


@pytest.mark.parametrize("value", ["0", "19"])
def test_a_nice_within_0_to_19_is_taken(load_settings, value):
    assert load_settings(BATCHHUB_WORKER_NICE=value)["BATCHHUB_WORKER_NICE"] == int(value)


def test_webhook_threads_per_destination_must_be_at_least_one(load_settings):
    with pytest.raises(
        ImproperlyConfigured,
        match=r"^BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION='0' must be at least 1",
    ):
        load_settings(BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION="0")
    taken = load_settings(BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION="3")
    assert taken["BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION"] == 3


def test_env_int_has_a_maximum(monkeypatch):
    monkeypatch.setenv("SOME_NUMBER", "11")

    with pytest.raises(ImproperlyConfigured, match=r"^SOME_NUMBER='11' must be at most 10\."):
        envconfig.env_int("SOME_NUMBER", 1, maximum=10)


def test_an_unknown_log_level_stops_start_up(load_settings):
    with pytest.raises(ImproperlyConfigured, match="^LOG_LEVEL='LOUD' is not a log level"):
        load_settings(LOG_LEVEL="LOUD")


def test_a_log_level_in_any_case_is_taken(load_settings):
    assert load_settings(LOG_LEVEL="debug")["LOGGING"]["root"]["level"] == "DEBUG"


def test_a_postgresql_connection_attempt_gives_up_after_seconds(load_settings):
    loaded = load_settings(DATABASE_URL="postgres://u:p@db.example:5432/x")
    assert loaded["DATABASES"]["default"]["OPTIONS"]["connect_timeout"] == 10
    given = load_settings(DATABASE_URL="postgres://u:p@db.example:5432/x?connect_timeout=3")
    assert given["DATABASES"]["default"]["OPTIONS"]["connect_timeout"] == 3


@pytest.mark.parametrize("value", ["0", "-1", "ten", "1.5"])
def test_a_client_idle_limit_below_a_second_or_not_whole_stops_start_up(load_settings, value):
    with pytest.raises(ImproperlyConfigured, match=f"^BATCHHUB_CLIENT_IDLE_SECONDS={value!r}"):
        load_settings(BATCHHUB_CLIENT_IDLE_SECONDS=value)


def test_the_client_idle_limit_defaults_to_15_seconds(load_settings, monkeypatch):
    monkeypatch.delenv("BATCHHUB_CLIENT_IDLE_SECONDS", raising=False)
    assert load_settings()["BATCHHUB_CLIENT_IDLE_SECONDS"] == 15
