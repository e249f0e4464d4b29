"""Real HTTP servers on 127.0.0.1 for the network processors' tests and the benchmark.

Each handler plays one kind of outside service: an OpenAI-compatible chat-completions API, a
small web site, and a JSON echo API. Markers in the request (``[429]`` in a prompt, a path such as
``/status/503``) choose the misbehaviour a test needs.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .pdfs import make_pdf


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or stopped reading at its size limit closes the socket under
        # the handler: expected in these tests, not worth a traceback.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    """``with LocalServer(Handler) as server:`` serves on an ephemeral port until the block ends."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], **state: Any):
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.state = {"requests": [], "times": [], "lock": threading.Lock(), **state}  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.httpd.state["requests"]  # type: ignore[attr-defined]

    @property
    def times(self) -> list[float]:
        """Arrival time (time.time()) of every request, as the server saw it."""
        return self.httpd.state["times"]  # type: ignore[attr-defined]

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keep-alive: a pooled client reuses connections, as it would with a real API.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # http.server writes the headers and the body in two sends; with Nagle's algorithm and the
        # client's delayed ACK the second one waits ~40 ms, which would swamp a 50 ms latency.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    @property
    def state(self) -> dict[str, Any]:
        return self.server.state  # type: ignore[attr-defined]

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _record(self, body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        entry = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "raw_headers": list(self.headers.items()),  # as sent: a name twice shows here
            "json": parsed,
            "client_port": self.client_address[1],  # one per connection
        }
        with self.state["lock"]:
            self.state["requests"].append(entry)
            self.state["times"].append(time.time())
        return entry

    def send(
        self,
        status: int,
        body: bytes | str | dict | list,
        *,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if isinstance(body, dict | list):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type or "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def http_date(seconds_from_now: float) -> str:
    return formatdate(time.time() + seconds_from_now, usegmt=True)


# --- an OpenAI-compatible chat-completions API --------------------------------------------------
def _content_text(content: Any) -> str:
    """A message's text; content parts (vision requests) are joined, an image as [image: URL]."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") == "text":
            texts.append(part["text"])
        elif part.get("type") == "image_url":
            texts.append(f"[image: {part['image_url']['url']}]")
    return "\n".join(texts)


class OpenAIHandler(_Handler):
    """POST /v1/chat/completions. The last user message steers it:
    ``[429]`` → 429 Retry-After: 7, ``[429-date]`` → 429 with an HTTP-date, ``[500]`` → 500,
    ``[slow]`` → answers after 1 s, ``[badjson]`` → prose instead of JSON in JSON mode,
    ``[wrongtype]`` → a JSON answer whose score is a string, ``[quota]`` → 200 with an error body.
    Text mode answers "ECHO: <prompt>"; JSON mode a fenced object {"sentiment", "score"}.
    """

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        entry = self._record(self._read_body())
        if self.path != "/v1/chat/completions":
            self.send(404, {"error": {"message": "not found"}})
            return
        body = entry["json"] or {}
        prompt = _content_text(body["messages"][-1]["content"])
        if "[429]" in prompt:
            self.send(
                429,
                {"error": {"type": "rate_limit_exceeded", "message": "slow down"}},
                headers={"Retry-After": "7"},
            )
            return
        if "[429-date]" in prompt:
            self.send(
                429, {"error": {"message": "slow down"}}, headers={"Retry-After": http_date(30)}
            )
            return
        if "[500]" in prompt:
            self.send(500, {"error": {"message": "boom"}})
            return
        if "[quota]" in prompt:
            self.send(
                200,
                {
                    "error": {
                        "type": "insufficient_quota",
                        "message": "You exceeded your current quota",
                    }
                },
            )
            return
        if "[slow]" in prompt:
            time.sleep(1.0)
        json_mode = (body.get("response_format") or {}).get("type") == "json_object"
        if json_mode and "[badjson]" in prompt:
            content = "Sure! The sentiment is positive, score 0.9."
        elif json_mode:
            score: Any = "high" if "[wrongtype]" in prompt else round(len(prompt) / 100, 2)
            answer = {"sentiment": "positive" if "good" in prompt else "negative", "score": score}
            content = "```json\n" + json.dumps(answer) + "\n```"
        else:
            content = "ECHO: " + prompt
        prompt_tokens = sum(len(_content_text(m["content"]).split()) for m in body["messages"])
        completion_tokens = len(content.split())
        self.send(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )


# --- a small web site ----------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="fr">
<head>
  <meta charset="utf-8">
  <title>  Le Café du Coin </title>
  <meta name="description" content="Un petit café au coin de la rue.">
  <meta property="og:description" content="OG description">
  <script>var tracking = "should not be in the text";</script>
</head>
<body>
  <nav><a href="/">Accueil</a> <a href="/menu">Menu</a></nav>
  <article>
    <h1>Bienvenue au Café du Coin</h1>
    <p>Nous servons du café torréfié sur place depuis 1987, avec des croissants préparés chaque
    matin par notre boulanger. Venez découvrir nos spécialités dans une ambiance chaleureuse.</p>
    <p>Notre terrasse est ouverte tous les jours de huit heures à dix-neuf heures, et nous
    proposons également des thés, des chocolats chauds et des pâtisseries maison.</p>
    <p class="price">Espresso : <span class="amount">2,10 €</span></p>
  </article>
  <footer>© Café du Coin</footer>
</body>
</html>"""

BARE_PAGE = """<html><head><meta property="og:description" content="Only OG here"></head>
<body><div id="x">tiny</div><p>short body text</p></body></html>"""


REPORT_PDF = make_pdf(
    ["Quarterly report: revenue grew", "Page two: costs fell", "Page three: outlook good"],
    title="Quarterly Report",
)


class SiteHandler(_Handler):
    def do_GET(self) -> None:  # noqa: N802
        self._record(b"")
        path = urlsplit(self.path).path
        if path == "/page":
            self.send(200, PAGE, content_type="text/html; charset=utf-8")
        elif path == "/bare":
            self.send(200, BARE_PAGE, content_type="text/html")
        elif path == "/latin1":
            html = (
                '<html lang="de"><head><meta charset="iso-8859-1"><title>Größe</title></head>'
                "<body><p>Grüße</p></body></html>"
            )
            self.send(200, html.encode("latin-1"), content_type="text/html")
        elif path.startswith("/hop/"):
            # /hop/N redirects N more times, then lands on /page.
            left = int(path.rsplit("/", 1)[1])
            target = f"/hop/{left - 1}" if left > 1 else "/page"
            self.send(301 if left % 2 else 302, "", headers={"Location": target})
        elif path == "/big":
            # No Content-Length: the client only learns the size by reading, in pieces.
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            piece = b"<p>" + b"x" * 8192 + b"</p>"
            try:
                for _ in range(200):  # ~1.6 MB
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading at its limit, as it should
            self.close_connection = True
        elif path == "/big-declared":
            self.send(200, "<p>" + "y" * 200_000 + "</p>", content_type="text/html")
        elif path == "/image.png":
            self.send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, content_type="image/png")
        elif path == "/report.pdf":
            self.send(200, REPORT_PDF, content_type="application/pdf")
        elif path == "/broken.pdf":
            self.send(200, b"%PDF-1.4\nnot really a pdf", content_type="application/pdf")
        elif path == "/notes.txt":
            self.send(200, "Just some plain text.", content_type="text/plain; charset=utf-8")
        elif path == "/busy":
            self.send(503, "busy", headers={"Retry-After": "2"})
        elif path == "/slow":
            time.sleep(1.0)
            self.send(200, PAGE, content_type="text/html")
        elif path == "/ftp-redirect":
            self.send(302, "", headers={"Location": "ftp://127.0.0.1/file"})
        elif path == "/redirect":
            # /redirect?to=URL: a page that sends the client wherever the query says.
            self.send(302, "", headers={"Location": parse_qs(urlsplit(self.path).query)["to"][0]})
        elif path == "/gzip":
            body = gzip.compress(PAGE.encode())
            self.send(
                200,
                body,
                content_type="text/html; charset=utf-8",
                headers={"Content-Encoding": "gzip"},
            )
        else:
            self.send(
                404,
                "<html><head><title>Not found</title></head><body>nope</body></html>",
                content_type="text/html",
            )


# --- a JSON echo API ----------------------------------------------------------------------------
class EchoHandler(_Handler):
    """/echo/… returns what it received; /items a nested document; /status/N answers N;
    /slow sleeps 1 s; /latency sleeps the server's ``latency`` (the benchmark's endpoint)."""

    def _any(self) -> None:
        if self.path == "/__times":  # for a server in another process: what it saw, when
            with self.state["lock"]:
                self.send(200, list(self.state["times"]))
            return
        entry = self._record(self._read_body())
        split = urlsplit(self.path)
        path = split.path
        if path.startswith("/echo"):
            self.send(
                200,
                {
                    **entry,
                    "path": path,
                    "query": {k: v[0] for k, v in parse_qs(split.query).items()},
                },
            )
        elif path == "/items":
            self.send(
                200,
                {
                    "data": {
                        "items": [{"name": "first", "tags": ["a", "b"]}, {"name": "second"}],
                        "count": 2,
                    }
                },
            )
        elif path == "/status/404":
            self.send(404, {"error": "no such user"})
        elif path == "/status/429":
            self.send(429, {"error": "slow down"}, headers={"Retry-After": "3"})
        elif path == "/status/503":
            self.send(503, "maintenance", headers={"Retry-After": http_date(120)})
        elif path == "/status/500":
            self.send(500, "oops")
        elif path == "/text":
            self.send(200, "plain words, not JSON")
        elif path == "/half":  # half of a character, and a whole one written as a pair
            self.send(200, '{"name": "b\\ud800d", "face": "\\ud83d\\ude00"}')
        elif path == "/deep":
            self.send(200, '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}")
        elif path == "/slow":
            time.sleep(1.0)
            self.send(200, {"ok": True})
        elif path == "/latency":
            time.sleep(self.state.get("latency", 0.05))
            self.send(200, {"ok": True, "n": len(self.state["requests"])})
        else:
            self.send(404, {"error": "unknown path"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any  # noqa: N815


class HoldingHandler(EchoHandler):
    """/hold answers once the server's ``release`` event is set, or after ``hold`` seconds (a
    slow service); the answers sent are counted in ``answered``."""

    def _any(self) -> None:
        if not self.path.startswith("/hold"):
            super()._any()
            return
        self._record(self._read_body())
        self.state["release"].wait(self.state["hold"])
        self.send(200, {"ok": True})
        with self.state["lock"]:
            self.state["answered"] += 1

    do_GET = _any  # noqa: N815


def holding_server(hold: float) -> LocalServer:
    return LocalServer(HoldingHandler, release=threading.Event(), answered=0, hold=hold)
