"""A web page on another site, in headless Chromium, against the default (no-token) API.

The page fires what a browser sends without asking the server first: a ``text/plain``
fetch, an untyped Blob body, a bodyless POST, an auto-submitted form and a WebSocket.
Nothing it sends may change anything. A page whose name resolves to the server (DNS
rebinding) must not read the API either.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e import test_dashboard as dashboard
from tests.e2e.harness import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

chromium = dashboard.chromium
server = dashboard.server

PAGE = """<!doctype html>
<title>cute cats</title>
<pre id="log"></pre>
<iframe name="sink"></iframe>
<form id="form" method="post" enctype="text/plain" target="sink" action="API/api/v1/jobs">
  <input name='{"type": "send_email", "parameters": {"to": "form@evil.example"}, "x": "'
         value='"}'>
</form>
<script>
const api = "API";
const job = {type: "send_email", parameters: {to: "victim@evil.example"}};
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const post = (path, body) => fetch(api + path, {method: "POST", mode: "no-cors", body});
const sent = (name, request) =>
  request.then(() => log(name + ": sent"), () => log(name + ": error"));
sent("text", post("/api/v1/jobs", JSON.stringify(job)));
sent("blob", post("/api/v1/jobs", new Blob([JSON.stringify(job)])));
sent("pause", post("/api/v1/queues/default/pause"));
document.getElementById("form").submit();
const ws = new WebSocket(api.replace("http", "ws") + "/ws/jobs");
ws.onopen = () => { ws.send(JSON.stringify({type: "submit_job", job})); log("ws: open"); };
ws.onclose = () => log("ws: closed");
</script>
"""


@contextlib.contextmanager
def hostile_site(api: str) -> Iterator[str]:
    """Serve the page on another origin (``http://localhost:<other port>``)."""
    page = PAGE.replace("API", api).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def test_a_page_on_another_site_changes_nothing(server: str, chromium: str, tmp_path: Path) -> None:
    with hostile_site(server) as page:
        dom = dashboard.browse(chromium, tmp_path, page, "--dump-dom").decode()
    log = re.search(r'<pre id="log">(.*?)</pre>', dom, re.S)
    assert log, dom
    # The page ran, and every request left the browser (no-cors answers are opaque).
    for line in ("text: sent", "blob: sent", "pause: sent"):
        assert line in log.group(1), log.group(1)
    with httpx.Client(base_url=server, timeout=10) as client:
        assert client.get("/api/v1/jobs").json()["items"] == []
        queues = client.get("/api/v1/queues").json()["items"]
        assert [q["name"] for q in queues if q["paused"]] == []
    assert "ws: closed" in log.group(1), log.group(1)
    assert "ws: open" not in log.group(1)


def test_a_rebound_name_reads_nothing(server: str, chromium: str, tmp_path: Path) -> None:
    port = server.rsplit(":", 1)[1]
    # The attacker's name now resolves to the server: the page is "same-origin" with it.
    rebound = f"http://rebind.evil.example:{port}/api/v1/queues"
    dom = dashboard.browse(
        chromium, tmp_path, rebound, "--dump-dom", "--host-resolver-rules=MAP * 127.0.0.1"
    ).decode()
    assert "FORBIDDEN" in dom, dom
    assert '"items"' not in dom
    # The same page under the server's own names loads.
    for name in ("127.0.0.1", "localhost"):
        own = dashboard.browse(
            chromium, tmp_path, f"http://{name}:{port}/api/v1/queues", "--dump-dom"
        ).decode()
        assert '"items"' in own, own
