"""Signed links, the two-step upload and the peers' input shapes, end to end: gunicorn serving the
API, a real celery worker, PostgreSQL and Redis; every request goes over HTTP."""

from __future__ import annotations

import base64
import http.client
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from apikeys.services import create_key
from jobs import links
from jobs.models import Job
from tests.support.webserver import WebServer
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def media(settings, tmp_path):
    # Before the worker and the server start: they read uploads from the same folder.
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def web(media, worker_factory, tmp_path, settings):
    worker_factory(concurrency=2)
    # The test shares the server's signing key, so it can mint a genuine link that has expired.
    server = WebServer(tmp_path, SECRET_KEY=settings.SECRET_KEY)
    yield server
    server.stop()


@pytest.fixture
def api(web, alice):
    _key, raw = create_key(alice, "e2e")
    with httpx.Client(base_url=f"{web.url}/api/v1", headers={"X-API-Key": raw}, timeout=120) as c:
        yield c


def finished(client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    def done():
        body = client.get(f"/jobs/{job_id}").json()
        return body["status"] in ("completed", "partial", "failed", "cancelled") and body

    return wait_for(done, timeout=timeout, interval=0.2, message=f"job {job_id} to finish")


def results_csv(client: httpx.Client, job_id: str) -> bytes:
    response = client.get(f"/jobs/{job_id}/results")
    assert response.status_code == 200, response.text
    return response.content


def create_multipart(client, text: str, name: str = "input.csv", **fields) -> dict:
    data = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items()}
    response = client.post("/jobs", files={"file": (name, text.encode())}, data=data)
    assert response.status_code == 201, response.text
    return response.json()


# --- links ---------------------------------------------------------------------------------------


def test_results_links_valid_expired_tampered_other_job_revoked(api, web, alice):
    first = create_multipart(api, "name\nann\nbob\n", processor="template",
                             params={"template": "{name}!"})
    second = create_multipart(api, "name\ncid\n", processor="template",
                              params={"template": "{name}?"})
    body = finished(api, first["id"])
    assert body["status"] == "completed"
    finished(api, second["id"])
    anonymous = httpx.Client(timeout=60)

    valid = anonymous.get(body["results_url"])
    assert valid.status_code == 200
    assert valid.content == results_csv(api, first["id"])
    assert valid.content == b"name,text,_status,_error\nann,ann!,succeeded,\nbob,bob!,succeeded,\n"

    job = Job.objects.get(public_id=first["id"])
    past = int(time.time()) - 1
    expired = links.sign_results(job.public_id, "csv", "all", job.link_version, past)
    split = urlsplit(body["results_url"])
    response = anonymous.get(f"{web.url}{split.path}", params={"token": expired})
    assert response.status_code == 410 and response.json()["error"]["code"] == "link_expired"

    token = parse_qs(split.query)["token"][0]
    response = anonymous.get(f"{web.url}{split.path}", params={"token": token[:-2] + "xx"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

    other = f"{web.url}/api/v1/jobs/{second['id']}/download"
    response = anonymous.get(other, params={"token": token})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"

    revoked = api.post(f"/jobs/{first['id']}/revoke-links")
    assert revoked.status_code == 200
    response = anonymous.get(body["results_url"])
    assert response.status_code == 410 and response.json()["error"]["code"] == "link_revoked"
    assert anonymous.get(revoked.json()["results_url"]).status_code == 200


# --- the two-step upload -------------------------------------------------------------------------


def test_two_step_upload_of_50_mb_keeps_web_memory_flat(api, web, tmp_path):
    rows = 25_000
    path = tmp_path / "big.csv"
    with path.open("w") as fh:
        fh.write("name,text\n")
        filler = "x" * 2000
        for i in range(rows):
            fh.write(f"p{i},{filler}\n")
    size = path.stat().st_size
    assert size >= 50_000_000

    started = api.post("/uploads", json={"filename": "big.csv"})
    assert started.status_code == 201, started.text
    upload = started.json()
    web.reset_peak()
    api.get("/processors")  # warm: the worker's imports and connections are in its baseline
    baseline = web.reset_peak()
    with path.open("rb") as fh:
        put = httpx.put(upload["upload_url"], content=fh, headers={"Content-Length": str(size)},
                        timeout=300)
    assert put.status_code == 200, put.text
    assert put.json()["size"] == size
    put_peak = web.peak_kb()

    created = api.post(
        "/jobs",
        json={"upload": upload["id"], "processor": "template", "params": {"template": "{name}"}},
    )
    assert created.status_code == 201, created.text
    create_peak = web.peak_kb()
    growth_mb = (max(put_peak, create_peak) - baseline) / 1024
    print(json.dumps({"upload_bytes": size, "web_rss_baseline_mb": round(baseline / 1024, 1),
                      "put_peak_growth_mb": round((put_peak - baseline) / 1024, 1),
                      "create_peak_growth_mb": round((create_peak - baseline) / 1024, 1)}))
    # 50 MB went through the web worker; its memory moved by a fraction of that.
    assert growth_mb < 20, growth_mb

    body = finished(api, created.json()["id"], timeout=300)
    assert body["status"] == "completed" and body["counts"]["succeeded"] == rows
    assert api.get(f"/uploads/{upload['id']}").json()["status"] == "used"


def test_upload_over_the_limit_is_refused_before_it_is_read(api, web):
    upload = api.post("/uploads", json={}).json()
    split = urlsplit(upload["upload_url"])
    # Declares 200 MB and sends 10 bytes: the answer comes without waiting for the rest.
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
    conn.putrequest("PUT", f"{split.path}?{split.query}")
    conn.putheader("Content-Length", str(200 * 1024 * 1024))
    conn.endheaders()
    conn.send(b"x" * 10)
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "file_too_large"
    conn.close()


# --- the peers' input shapes ---------------------------------------------------------------------

CSV = "data_uuid,input_1,input_2\n1,https://example.com/a,red\n2,https://example.com/b,blue\n"
TEMPLATE = {"template": "{input_1} in {input_2}"}


def test_promptloop_jsonl_gives_what_the_csv_gives(api):
    lines = [
        {"data_uuid": "1", "inputs": ["https://example.com/a", "red"]},
        {"data_uuid": "2", "inputs": ["https://example.com/b", "blue"]},
    ]
    jsonl = "".join(json.dumps(line) + "\n" for line in lines)
    from_csv = create_multipart(api, CSV, processor="template", params=TEMPLATE,
                                id_column="data_uuid")
    from_jsonl = create_multipart(api, jsonl, name="batch.jsonl", processor="template",
                                  params=TEMPLATE)
    assert from_jsonl["id_column"] == "data_uuid"
    assert finished(api, from_csv["id"])["status"] == "completed"
    assert finished(api, from_jsonl["id"])["status"] == "completed"

    expected = results_csv(api, from_csv["id"])
    assert results_csv(api, from_jsonl["id"]) == expected
    assert b"https://example.com/a in red" in expected
    refs = [r["ref"] for r in api.get(f"/jobs/{from_jsonl['id']}/rows").json()["results"]]
    assert refs == ["1", "2"]
    # A small job's rows come with its status when asked for.
    embedded = api.get(f"/jobs/{from_jsonl['id']}", params={"include": "results"}).json()
    assert [row["ref"] for row in embedded["results"]] == ["1", "2"]
    assert embedded["results"][0]["output"] == {"text": "https://example.com/a in red"}


def test_csv_base64_gives_what_the_csv_gives(api):
    from_csv = create_multipart(api, CSV, processor="template", params=TEMPLATE)
    response = api.post("/jobs", json={
        "processor": "template", "params": TEMPLATE,
        "csv_base64": base64.b64encode(CSV.encode()).decode(),
    })
    assert response.status_code == 201, response.text
    finished(api, from_csv["id"])
    assert finished(api, response.json()["id"])["status"] == "completed"
    assert results_csv(api, response.json()["id"]) == results_csv(api, from_csv["id"])


def test_documents_with_column_mapping_and_job_id(api):
    csv_text = "doc_id,body\nd1,I love this\nd2,This is awful\n"
    from_csv = create_multipart(api, csv_text, processor="sentiment",
                                column_map={"text": "body"}, id_column="doc_id")
    request = {
        "processor": "sentiment",
        "documents": [{"doc_id": "d1", "body": "I love this"},
                      {"doc_id": "d2", "body": "This is awful"}],
        "column_mapping": {"text": "body"},
        "id_column": "doc_id",
        "job_id": "tagging-run-42",
    }
    first = api.post("/jobs", json=request)
    assert first.status_code == 201, first.text
    repeat = api.post("/jobs", json=request)
    assert repeat.status_code == 200 and repeat.json()["id"] == first.json()["id"]
    changed = api.post("/jobs", json={**request, "documents": [{"doc_id": "d3", "body": "x"}]})
    assert changed.status_code == 409

    finished(api, from_csv["id"])
    assert finished(api, first.json()["id"])["status"] == "completed"
    assert results_csv(api, first.json()["id"]) == results_csv(api, from_csv["id"])


# --- documents and images ------------------------------------------------------------------------


def test_a_generated_pdf_through_document_then_llm(api):
    from tests.processors.servers import LocalServer, OpenAIHandler, SiteHandler

    with LocalServer(SiteHandler) as site, LocalServer(OpenAIHandler) as model:
        pdf = f"{site.url}/report.pdf"
        read = create_multipart(api, f"url\n{pdf}\n{site.url}/broken.pdf\n",
                                processor="document", params={"max_pages": 2})
        body = finished(api, read["id"])
        assert body["status"] == "partial"
        rows = api.get(f"/jobs/{read['id']}/results", params={"format": "json"}).json()
        assert rows[0]["output"]["title"] == "Quarterly Report"
        assert rows[0]["output"]["page_count"] == 3
        assert "revenue grew" in rows[0]["output"]["text"]
        assert "Page three" not in rows[0]["output"]["text"]
        assert rows[1]["status"] == "failed" and "PDF could not be read" in rows[1]["error"]

        tag = create_multipart(
            api,
            f"name,doc,picture\nr1,{pdf},https://images.example.com/r1.png\n",
            processor="llm",
            params={
                "base_url": f"{model.url}/v1",
                "model": "vision-test",
                "prompt": "Tag {name}",
                "document_column": "doc",
                "document_max_pages": 1,
                "image_column": "picture",
            },
        )
        assert finished(api, tag["id"])["status"] == "completed"
        [row] = api.get(f"/jobs/{tag['id']}/results", params={"format": "json"}).json()
        answer = row["output"]["answer"]
        assert answer.startswith("ECHO: Tag r1\nDocument: Quarterly Report\n")
        assert "revenue grew" in answer and "costs fell" not in answer
        assert answer.endswith("[image: https://images.example.com/r1.png]")
        parts = model.requests[0]["json"]["messages"][-1]["content"]
        assert [p["type"] for p in parts] == ["text", "text", "image_url"]
