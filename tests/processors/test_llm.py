from __future__ import annotations

import time

import pytest

from jobs.processors.base import ParamsError, ProcessorContext
from jobs.processors.llm import LLMProcessor

from .conftest import make_row

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative"]},
        "score": {"type": "number"},
    },
    "required": ["sentiment", "score"],
}


def llm(server, **params):
    base = {
        "base_url": server.url + "/v1",
        "model": "test-model",
        "prompt": "Review: {review}",
        "timeout": 0.5,
    }
    return LLMProcessor(
        {**base, **params}, context=ProcessorContext(owner_id=None, job_id="job_x", concurrency=4)
    )


def test_text_mode_sends_prompt_and_records_usage(openai_server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-123")
    proc = llm(
        openai_server,
        system="You rate {product} reviews.",
        temperature=0.2,
        max_tokens=50,
        api_key_env="TEST_LLM_KEY",
    )
    result = proc.run_one(make_row({"review": "good coffee", "product": "café"}))
    proc.close()

    assert result.error is None
    assert result.output == {"answer": "ECHO: Review: good coffee"}
    assert result.usage == {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
    sent = openai_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-test-123"
    assert sent["json"]["model"] == "test-model"
    assert sent["json"]["temperature"] == 0.2 and sent["json"]["max_tokens"] == 50
    assert sent["json"]["messages"] == [
        {"role": "system", "content": "You rate café reviews."},
        {"role": "user", "content": "Review: good coffee"},
    ]
    assert "response_format" not in sent["json"]


def test_custom_output_column_and_no_key(openai_server):
    proc = llm(openai_server, output_column="summary")
    assert proc.output_columns() == ["summary"]
    result = proc.run_one(make_row({"review": "fine"}))
    assert result.output == {"summary": "ECHO: Review: fine"}
    assert "authorization" not in openai_server.requests[0]["headers"]


def test_json_mode_keys_become_columns(openai_server):
    proc = llm(openai_server, output_mode="json", json_schema=SCHEMA)
    assert proc.output_columns() == ["sentiment", "score"]
    result = proc.run_one(make_row({"review": "good stuff"}))
    assert result.error is None, result.error
    assert result.output == {"sentiment": "positive", "score": 0.18}
    sent = openai_server.requests[0]["json"]
    assert sent["response_format"] == {"type": "json_object"}
    assert "JSON object with the keys: sentiment, score" in sent["messages"][0]["content"]
    assert result.usage["total_tokens"] > 0


def test_json_mode_malformed_answer_is_a_row_error(openai_server):
    proc = llm(openai_server, output_mode="json", json_schema=SCHEMA)
    result = proc.run_one(make_row({"review": "[badjson]"}))
    assert result.retry is False
    assert result.error.startswith("The model's answer is not valid JSON")
    assert result.reason == "The model's answer is not valid JSON"  # without the prose


def test_json_mode_answer_not_matching_schema_is_a_row_error(openai_server):
    proc = llm(openai_server, output_mode="json", json_schema=SCHEMA)
    result = proc.run_one(make_row({"review": "good [wrongtype]"}))
    assert result.retry is False
    assert (
        result.error
        == "The model's JSON does not match the schema at score: 'high' is not of type 'number'"
    )
    # Rows count by where the answer went wrong, not by the value each model answer held.
    assert result.reason == "The model's JSON does not match the schema at score"


def test_429_with_retry_after_is_rate_limited(openai_server):
    result = llm(openai_server).run_one(make_row({"review": "[429]"}))
    assert result.retry and result.rate_limited
    assert result.retry_after == 7
    assert "429" in result.error


def test_429_with_http_date(openai_server):
    result = llm(openai_server).run_one(make_row({"review": "[429-date]"}))
    assert result.rate_limited
    assert 25 <= result.retry_after <= 31


def test_quota_error_in_a_200_body_is_rate_limited(openai_server):
    result = llm(openai_server).run_one(make_row({"review": "[quota]"}))
    assert result.retry and result.rate_limited
    assert "quota" in result.error
    assert result.reason == "The LLM endpoint: insufficient_quota"


def test_500_is_retryable_not_rate_limited(openai_server):
    result = llm(openai_server).run_one(make_row({"review": "[500]"}))
    assert result.retry and not result.rate_limited
    assert "500" in result.error
    assert result.reason == "The LLM endpoint answered 500 Internal Server Error"


def test_timeout_is_retryable(openai_server):
    proc = llm(openai_server, timeout=0.2)
    started = time.monotonic()
    result = proc.run_one(make_row({"review": "[slow]"}))
    assert time.monotonic() - started < 0.9
    assert result.retry and not result.rate_limited
    assert "timed out" in result.error


def test_connection_refused_is_retryable():
    proc = LLMProcessor(
        {"base_url": "http://127.0.0.1:9/v1", "model": "m", "prompt": "{x}", "timeout": 0.5}
    )
    result = proc.run_one(make_row({"x": "hi"}))
    assert result.retry and "connection failed" in result.error
    assert result.reason == "The LLM endpoint: connection failed (Connection refused)"


def test_missing_column_is_a_row_error(openai_server):
    result = llm(openai_server).run_one(make_row({"other": "x"}))
    assert result.error == "The row has no column 'review' (used in a template)."
    assert openai_server.requests == []


def test_missing_env_key_fails_rows_with_a_clear_message(openai_server, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = llm(openai_server, api_key_env="NOT_SET_ANYWHERE").run_one(make_row({"review": "x"}))
    assert (
        result.error
        == "The environment variable NOT_SET_ANYWHERE (the LLM API key) is not set on the worker."
    )
    assert openai_server.requests == []


@pytest.mark.parametrize("field", ["api_key", "apiKey", "openai_api_key", "token", "secret"])
def test_secrets_in_params_are_refused(field):
    with pytest.raises(ParamsError) as info:
        LLMProcessor.validate_params({"model": "m", "prompt": "{x}", field: "sk-abc"})
    assert "never put an API key in a job's params" in str(info.value)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"model": "m", "prompt": "{x.__class__}"}, "params.prompt"),
        ({"model": "m", "prompt": "{x}", "output_mode": "json"}, "params.json_schema"),
        (
            {
                "model": "m",
                "prompt": "{x}",
                "output_mode": "json",
                "json_schema": {"properties": {"a": {"type": "str"}}},
            },
            "params.json_schema",
        ),
        (
            {
                "model": "m",
                "prompt": "{x}",
                "output_mode": "json",
                "json_schema": {"properties": {"a": {"type": "string"}}, "required": ["b"]},
            },
            "params.json_schema.required",
        ),
        ({"model": "m", "prompt": "{x}", "api_key_env": "A", "credential": "b"}, "not both"),
        ({"model": "m", "prompt": "{x}", "base_url": "ftp://x"}, "params.base_url"),
        ({"model": "m", "prompt": "{x}", "temperature": 3}, "params.temperature"),
    ],
)
def test_bad_params(params, message):
    with pytest.raises(ParamsError) as info:
        LLMProcessor.validate_params(params)
    assert message in str(info.value)


@pytest.mark.django_db
def test_saved_credential_is_sent_as_bearer(openai_server, alice):
    from jobs.credentials import save_credential

    save_credential(alice, "my-llm", "sk-live-abcdefghijkl")
    proc = LLMProcessor(
        {
            "base_url": openai_server.url + "/v1",
            "model": "m",
            "prompt": "{x}",
            "credential": "my-llm",
        },
        context=ProcessorContext(owner_id=alice.pk, job_id="job_1", concurrency=2),
    )
    assert proc.run_one(make_row({"x": "hi"})).error is None
    assert openai_server.requests[0]["headers"]["authorization"] == "Bearer sk-live-abcdefghijkl"


@pytest.mark.django_db
def test_unknown_credential_fails_rows_without_calling(openai_server, alice, bob):
    from jobs.credentials import save_credential

    save_credential(bob, "my-llm", "sk-bobs-key-000000")  # bob's credential is not alice's
    proc = LLMProcessor(
        {
            "base_url": openai_server.url + "/v1",
            "model": "m",
            "prompt": "{x}",
            "credential": "my-llm",
        },
        context=ProcessorContext(owner_id=alice.pk),
    )
    result = proc.run_one(make_row({"x": "hi"}))
    assert "no saved credential named 'my-llm'" in result.error
    assert openai_server.requests == []
