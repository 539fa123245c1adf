"""The one fetcher (batch manifests and ``serve``) against real local HTTP servers run in threads.

Regression tests for issue #13 ("Fetching"): on the old code an allowed URL that redirected to
127.0.0.x saved the internal response as a video (SSRF); a redirect to a closed port answered 502
with the errno text; ``/videos/../secret`` and its ``%2e%2e`` form passed the ``--allow-url`` prefix
check; an origin dripping one byte at a time held a request for minutes; a path with a NUL byte gave
a 500.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import verdict_json

from kuaimod_open.judge.backends.base import GenerateConfig
from kuaimod_open.judge.backends.scripted import ScriptedBackend
from kuaimod_open.judge.pipeline import ModerationConfig

VIDEO = (Path(__file__).parent / "data" / "promo_zh.mp4").read_bytes()
SECRET = b"INTERNAL-ONLY " * 100


class Origin:
    """A local HTTP server with scripted routes; counts the requests each path received."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: Counter[str] = Counter()
        self.routes: dict[str, Any] = {}
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                origin.hits[self.path] += 1
                route = origin.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                    return
                route(self)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def body(data: bytes, kind: str = "video/mp4"):
    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return send


def redirect(location: str, code: int = 302):
    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(code)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return send


def drip(every_s: float, stop_after_s: float = 20.0):
    """Headers at once, then one byte every ``every_s`` (gives up after ``stop_after_s``)."""

    def send(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(VIDEO)))
        h.end_headers()
        started = time.monotonic()
        try:
            for byte in VIDEO:
                if time.monotonic() - started > stop_after_s:
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                time.sleep(every_s)
        except OSError:
            return

    return send


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def origins():
    made: list[Origin] = []

    def make(host: str = "127.0.0.1") -> Origin:
        made.append(Origin(host))
        return made[-1]

    yield make
    for origin in made:
        origin.close()


# --------------------------------------------------------------------------- the fetcher itself


def test_fetches_an_allowed_video_by_content_and_refuses_everything_else(origins, tmp_path):
    from kuaimod_open.ingest.fetch import FAILED, FetchError, FetchPolicy, fetch

    cdn, internal = origins(), origins("127.0.0.2")
    internal.routes["/secret.mp4"] = body(SECRET)
    cdn.routes["/videos/ok.mp4"] = body(VIDEO)
    cdn.routes["/videos/hop.mp4"] = redirect("/videos/ok.mp4")
    cdn.routes["/videos/to-internal.mp4"] = redirect(f"{internal.base}/secret.mp4")
    cdn.routes["/videos/to-closed.mp4"] = redirect(f"http://127.0.0.1:{closed_port()}/videos/x.mp4")
    cdn.routes["/videos/loop.mp4"] = redirect("/videos/loop.mp4")
    only_cdn = FetchPolicy(allow_networks=("127.0.0.1/32",), total_s=10)

    got = fetch(f"{cdn.base}/videos/hop.mp4", tmp_path, only_cdn)
    assert got.path.read_bytes() == VIDEO and got.path.name.startswith(got.content)
    assert got.url.endswith("/videos/ok.mp4")

    # The same origin, but loopback is not allowed unless named: refused before any byte is sent.
    before = sum(cdn.hits.values())
    with pytest.raises(FetchError) as refused:
        fetch(f"{cdn.base}/videos/ok.mp4", tmp_path, FetchPolicy())
    assert str(refused.value) == FAILED and sum(cdn.hits.values()) == before

    # Redirects are re-checked hop by hop: 127.0.0.2 is not in the allowed network.
    messages = set()
    for path in ("/videos/to-internal.mp4", "/videos/to-closed.mp4", "/videos/loop.mp4", "/videos/missing.mp4"):
        with pytest.raises(FetchError) as failed:
            fetch(f"{cdn.base}{path}", tmp_path, FetchPolicy(allow_networks=("127.0.0.1/32",), total_s=10))
        messages.add(str(failed.value))
    with pytest.raises(FetchError) as unresolvable:
        fetch("http://no-such-host.invalid/videos/x.mp4", tmp_path, only_cdn)
    messages.add(str(unresolvable.value))
    # One message for a private target, a closed port, a loop, a 404 and a name that does not resolve.
    assert messages == {FAILED} and "rrno" not in FAILED
    assert internal.hits["/secret.mp4"] == 0
    assert not list(tmp_path.glob(".part-*"))  # no partial file left behind


@pytest.mark.parametrize(
    "path",
    [
        "/videos/../secret/x.mp4",
        "/videos/%2e%2e/secret/x.mp4",
        "/videos/%2E%2e/secret/x.mp4",
        "/videos/.%2e/secret/x.mp4",
        "/videos/..%2fsecret/x.mp4",
        "/videos/..%5csecret/x.mp4",
        "/videos/..\\secret/x.mp4",
        "/videos/./x.mp4",
        "/videos/%252e%252e/secret/x.mp4",
    ],
)
def test_dot_segments_in_any_spelling_are_refused(path):
    from kuaimod_open.ingest.fetch import FetchError, FetchPolicy, check_url

    policy = FetchPolicy(prefixes=("https://cdn.example.com/videos/",))
    with pytest.raises(FetchError, match="segment"):
        check_url("https://cdn.example.com" + path, policy)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.example.com/videos/a.mp4", True),
        ("HTTPS://CDN.example.com:443/videos//a.mp4", True),
        ("https://cdn.example.com/videos", False),
        ("https://cdn.example.com/videos-private/a.mp4", False),
        ("https://cdn.example.com.evil.net/videos/a.mp4", False),
        ("https://cdn.example.com@evil.net/videos/a.mp4", False),
        ("https://evil.net/?https://cdn.example.com/videos/a.mp4", False),
        ("http://cdn.example.com/videos/a.mp4", False),
        ("https://cdn.example.com:8443/videos/a.mp4", False),
        ("file:///etc/passwd", False),
        ("ftp://cdn.example.com/videos/a.mp4", False),
        ("https://cdn.example.com/videos/a\x00.mp4", False),
    ],
)
def test_allow_list_is_matched_on_the_normalised_url(url, allowed):
    from kuaimod_open.ingest.fetch import FetchError, FetchPolicy, check_url

    policy = FetchPolicy(prefixes=("https://cdn.example.com/videos/",))
    if allowed:
        assert check_url(url, policy).startswith("https://cdn.example.com/videos")
    else:
        with pytest.raises(FetchError):
            check_url(url, policy)


def test_addresses_that_are_not_public_are_refused_unless_allowed():
    import ipaddress

    from kuaimod_open.ingest.fetch import FetchPolicy

    default, lab = FetchPolicy(), FetchPolicy(allow_networks=("10.20.0.0/16",))
    for text in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "172.16.0.5", "169.254.169.254", "100.64.0.1", "0.0.0.0",
                 "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"):  # fmt: skip
        assert not default.allows_address(ipaddress.ip_address(text)), text
    assert default.allows_address(ipaddress.ip_address("93.184.216.34"))
    assert lab.allows_address(ipaddress.ip_address("10.20.3.4"))
    assert not lab.allows_address(ipaddress.ip_address("10.21.3.4"))


def test_a_slow_origin_is_cut_off_by_the_total_deadline_and_big_files_by_the_cap(origins, tmp_path):
    from kuaimod_open.ingest.fetch import FAILED, FetchError, FetchPolicy, fetch

    cdn = origins()
    cdn.routes["/videos/slow.mp4"] = drip(0.2)
    cdn.routes["/videos/big.mp4"] = body(VIDEO)
    policy = FetchPolicy(allow_networks=("127.0.0.1/32",), read_s=5, total_s=3)
    started = time.monotonic()
    with pytest.raises(FetchError, match="could not fetch"):
        fetch(f"{cdn.base}/videos/slow.mp4", tmp_path, policy)
    assert time.monotonic() - started < 6
    small = FetchPolicy(allow_networks=("127.0.0.1/32",), max_bytes=len(VIDEO) - 1)
    with pytest.raises(FetchError, match="larger than") as big:
        fetch(f"{cdn.base}/videos/big.mp4", tmp_path, small)
    assert big.value.reason == "too_large" and str(big.value) != FAILED
    assert not list(tmp_path.glob(".part-*"))


# --------------------------------------------------------------------------- through kuaimod serve


@pytest.fixture
def serve(policy, template, tmp_path):
    pytest.importorskip("fastapi")
    import uvicorn

    from kuaimod_open.serving.service import ServeSettings, create_app

    servers = []

    def start(**overrides: Any) -> str:
        settings = ServeSettings(
            **{"api_keys": frozenset({"k"}), "work_dir": tmp_path / "serve", "roots": (tmp_path,), **overrides}
        )
        config = ModerationConfig(frames=2, generate=GenerateConfig(batch_size=4))
        app = create_app(settings, policy, template, ScriptedBackend(default=verdict_json("BENIGN")), config)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=30)


def _post(base: str, payload: dict, timeout: float = 30) -> tuple[int, dict]:
    from test_serve import call

    return call(f"{base}/v1/moderate", payload, key="k")


@pytest.mark.video
def test_serve_fetches_through_the_one_fetcher(serve, origins, tmp_path):
    pytest.importorskip("decord")
    cdn, internal = origins(), origins("127.0.0.2")
    internal.routes["/secret.mp4"] = body(SECRET)
    internal.routes["/videos/secret.mp4"] = body(SECRET)
    port = closed_port()
    cdn.routes["/videos/ok.mp4"] = body(VIDEO)
    cdn.routes["/secret/x.mp4"] = body(SECRET)
    cdn.routes["/videos/to-internal.mp4"] = redirect(f"{internal.base}/secret.mp4")
    cdn.routes["/videos/to-closed.mp4"] = redirect(f"http://127.0.0.1:{port}/videos/x.mp4")
    cdn.routes["/videos/slow.mp4"] = drip(0.5)
    base = serve(
        url_prefixes=(f"{cdn.base}/videos/", f"http://127.0.0.1:{port}/videos/", f"{internal.base}/videos/"),
        allow_networks=("127.0.0.1/32",),
        fetch_timeout_s=3.0,
    )
    status, verdict = _post(base, {"url": f"{cdn.base}/videos/ok.mp4"})
    assert status == 200 and verdict["status"] == "ok" and verdict["provenance"]["content_digest"]

    # SSRF: an allowed URL redirecting to another host is refused by the allow-list on that hop;
    # a URL naming the internal host under an allowed prefix is refused by its address.
    status, answer = _post(base, {"url": f"{cdn.base}/videos/to-internal.mp4"})
    assert status == 403 and "allowed prefix" in answer["detail"]
    status, answer = _post(base, {"url": f"{internal.base}/videos/secret.mp4"})
    assert status == 502 and internal.hits["/videos/secret.mp4"] == 0 and internal.hits["/secret.mp4"] == 0

    # A closed port and a private address answer exactly alike, with no errno.
    status, closed = _post(base, {"url": f"{cdn.base}/videos/to-closed.mp4"})
    assert (
        (status, closed) == (502, answer) and "rrno" not in json.dumps(closed) and "refused" not in json.dumps(closed)
    )

    # Dot segments: refused before any request; the origin's /secret was never asked for.
    for path in ("/videos/../secret/x.mp4", "/videos/%2e%2e/secret/x.mp4"):
        status, answer = _post(base, {"url": cdn.base + path})
        assert status == 403, answer
    assert cdn.hits["/secret/x.mp4"] == 0 and not any("secret" in p for p in cdn.hits)

    # file:// is not fetched; a NUL byte is a 4xx, never a 500.
    assert _post(base, {"url": "file:///etc/passwd"})[0] == 403
    assert _post(base, {"url": f"{cdn.base}/videos/a\x00.mp4"})[0] == 403
    status, answer = _post(base, {"path": "a\x00b.mp4"})
    assert status == 400 and "NUL" in answer["detail"]

    # A slow origin is cut off by the deadline.
    started = time.monotonic()
    status, answer = _post(base, {"url": f"{cdn.base}/videos/slow.mp4"})
    assert status == 502 and time.monotonic() - started < 15


@pytest.mark.video
def test_batch_manifest_urls_go_through_the_same_fetcher(origins, policy, template, tmp_path):
    pytest.importorskip("decord")
    from kuaimod_open.ingest.fetch import FetchPolicy
    from kuaimod_open.ingest.manifest import load_manifest
    from kuaimod_open.serving.runner import RunnerConfig, run_job

    cdn, internal = origins(), origins("127.0.0.2")
    internal.routes["/secret.mp4"] = body(SECRET)
    cdn.routes["/videos/ok.mp4"] = body(VIDEO)
    cdn.routes["/videos/to-internal.mp4"] = redirect(f"{internal.base}/secret.mp4")
    rows = [
        {"id": "ok", "url": f"{cdn.base}/videos/ok.mp4"},
        {"id": "ssrf", "url": f"{cdn.base}/videos/to-internal.mp4"},
        {"id": "dots", "url": f"{cdn.base}/videos/%2e%2e/secret.mp4"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = ModerationConfig(frames=2, frames_dir=tmp_path / "frames")
    runner = RunnerConfig(workers=0, progress=False, fetch=FetchPolicy(allow_networks=("127.0.0.1/32",), total_s=10))
    backend = ScriptedBackend(default=verdict_json("BENIGN"))
    run_job(load_manifest(manifest), policy, backend, template, tmp_path / "v.jsonl", config, runner)
    verdicts = {v["sample_id"]: v for v in map(json.loads, (tmp_path / "v.jsonl").read_text().splitlines())}
    assert verdicts["ok"]["status"] == "ok"
    assert verdicts["ssrf"]["decision"] == "review" and "could not fetch" in verdicts["ssrf"]["error"]
    assert verdicts["dots"]["decision"] == "review" and "segment" in verdicts["dots"]["error"]
    assert internal.hits["/secret.mp4"] == 0
