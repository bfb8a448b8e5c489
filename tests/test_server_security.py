"""The server's security layer over real HTTP: Host and Origin checks, API key, body and queue
limits, CORS only for listed origins, errors in each protocol's shape, and no file serving."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlparse

import anthropic
import openai
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from mlx_backend.server import security
from mlx_backend.server.app import create_app, http_error
from mlx_backend.server.backend import JobEnded, Rejected, ServedModel
from mlx_backend.server.settings import ServerSettings, ServerSettingsError
from tests.support.server import serving

KEY = "s3cret-key"


class FakeBackend:
    def served_model(self):
        return ServedModel("fake-qwen", None)

    def submit(self, request, sink, *, client=""):
        # Once the protocol routes exist, a request that gets past the checks ends here, cleanly.
        sink(Rejected("no generation in these tests"))
        sink(JobEnded())
        return lambda: None


def raw(url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    """One request with exactly these headers (Host included): (status, headers, parsed body or text)."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    headers = dict(headers or {})
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    conn.putheader("Host", headers.pop("Host", parsed.netloc))
    if body is not None and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(body))
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    try:
        parsed_body = json.loads(data)
    except ValueError:
        parsed_body = data.decode(errors="replace")
    return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed_body


def is_openai_error(body, status_type: str | None = None) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and set(error) == {"message", "type", "param", "code"}
        and bool(error["message"])
        and (status_type is None or error["type"] == status_type)
    )


def is_anthropic_error(body, kind: str) -> bool:
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and body["error"]["type"] == kind
        and bool(body["error"]["message"])
    )


# ------------------------------------------------------------------ Host header


@pytest.fixture(scope="module")
def plain_url():
    with serving(create_app(FakeBackend(), ServerSettings(allowed_hosts=("mybox.local",)))) as url:
        yield url


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}", "[::1]", "[::1]:{port}", "LocalHost:{port}", "mybox.local:{port}", "mybox.local"]
)
def test_loopback_names_and_allowed_hosts_are_answered(plain_url, host):
    status, _, body = raw(plain_url, "GET", "/v1/models", {"Host": host.format(port=urlparse(plain_url).port)})
    assert status == 200 and body["data"][0]["id"] == "fake-qwen"


@pytest.mark.parametrize(
    "host", ["attacker.example", "attacker.example:{port}", "localhost.attacker.example", "127.0.0.1.nip.io:{port}", "mybox.local.evil", ""]
)
def test_other_names_are_refused_as_a_rebinding_page_would_send_them(plain_url, host):
    status, _, body = raw(plain_url, "GET", "/v1/models", {"Host": host.format(port=urlparse(plain_url).port)})
    assert status == 403 and is_openai_error(body, "permission_error")
    assert "--allow-host" in body["error"]["message"]
    assert "fake-qwen" not in json.dumps(body)


def test_a_refused_host_on_the_anthropic_path_gets_anthropics_shape(plain_url):
    status, _, body = raw(plain_url, "POST", "/v1/messages", {"Host": "attacker.example", "Content-Type": "application/json"}, b"{}")
    assert status == 403 and is_anthropic_error(body, "permission_error")


def test_the_listening_address_itself_is_an_allowed_name():
    app = create_app(FakeBackend(), ServerSettings(host="10.1.2.3", api_key=KEY))
    with serving(app) as url:  # served on loopback, but the settings name 10.1.2.3
        auth = {"Authorization": f"Bearer {KEY}"}
        assert raw(url, "GET", "/v1/models", {"Host": "10.1.2.3:8765", **auth})[0] == 200
        assert raw(url, "GET", "/v1/models", {"Host": "10.1.2.4:8765", **auth})[0] == 403


# ------------------------------------------------------------------ API key


@pytest.fixture(scope="module")
def keyed_url():
    with serving(create_app(FakeBackend(), ServerSettings(api_key=KEY))) as url:
        yield url


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"x-api-key": "wrong"}, {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}])
def test_a_missing_or_wrong_key_is_refused_in_both_shapes(keyed_url, headers):
    status, _, body = raw(keyed_url, "GET", "/v1/models", headers)
    assert status == 401 and is_openai_error(body) and body["error"]["code"] == "invalid_api_key"
    status, _, body = raw(keyed_url, "POST", "/v1/messages", {**headers, "Content-Type": "application/json"}, b"{}")
    assert status == 401 and is_anthropic_error(body, "authentication_error")


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"x-api-key": KEY}])
def test_the_key_is_accepted_either_way_the_clients_send_it(keyed_url, headers):
    status, _, body = raw(keyed_url, "GET", "/v1/models", headers)
    assert status == 200 and body["data"][0]["id"] == "fake-qwen"


def test_the_official_clients_raise_authentication_errors_and_work_with_the_key(keyed_url):
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="wrong", max_retries=0).models.list()
    assert "API key" in str(refused.value)
    assert [m.id for m in openai.OpenAI(base_url=f"{keyed_url}/v1", api_key=KEY, max_retries=0).models.list()] == ["fake-qwen"]

    client = anthropic.Anthropic(base_url=keyed_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="fake-qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["error"]["type"] == "authentication_error"
    # With the right key the request gets past the checks (the route itself is not on this branch).
    client = anthropic.Anthropic(base_url=keyed_url, api_key=KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as passed:
        client.messages.create(model="fake-qwen", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert passed.value.status_code not in (401, 403)


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "mybox.local"])
def test_a_host_open_to_the_network_needs_a_key(host):
    with pytest.raises(ServerSettingsError, match="API key"):
        ServerSettings(host=host).check()
    with pytest.raises(ServerSettingsError, match="--api-key"):
        create_app(FakeBackend(), ServerSettings(host=host))
    assert ServerSettings(host=host, api_key=KEY).check().api_key == KEY


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_needs_no_key(host):
    assert ServerSettings(host=host).check().loopback_only


def test_a_wildcard_cors_origin_is_refused():
    with pytest.raises(ServerSettingsError, match="in full"):
        ServerSettings(cors_origins=("*",)).check()


# ------------------------------------------------------------------ CORS and web pages


def test_no_cors_by_default_and_web_pages_get_no_permission(plain_url):
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    status, headers, _ = raw(plain_url, "OPTIONS", "/v1/chat/completions", preflight)
    assert status == 403 and not any(name.startswith("access-control-") for name in headers)
    status, headers, body = raw(plain_url, "GET", "/v1/models", {"Origin": "http://evil.example"})
    assert status == 403 and "--cors-origin" in body["error"]["message"]
    assert not any(name.startswith("access-control-") for name in headers)
    # A client that is no web page sends no Origin and sees no CORS headers either.
    status, headers, _ = raw(plain_url, "GET", "/v1/models")
    assert status == 200 and not any(name.startswith("access-control-") for name in headers)


def test_cors_only_for_a_listed_origin():
    listed = "http://localhost:3000"
    with serving(create_app(FakeBackend(), ServerSettings(api_key=KEY, cors_origins=(listed,)))) as url:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
        # The browser's preflight carries no key; a listed origin still gets its permission.
        status, headers, _ = raw(url, "OPTIONS", "/v1/chat/completions", {"Origin": listed, **preflight})
        assert status == 200 and headers["access-control-allow-origin"] == listed
        assert "authorization" in headers["access-control-allow-headers"].lower()
        status, headers, body = raw(url, "GET", "/v1/models", {"Origin": listed, "Authorization": f"Bearer {KEY}"})
        assert status == 200 and headers["access-control-allow-origin"] == listed and body["data"]
        # Errors reach the listed page too, so it can tell the user why.
        status, headers, body = raw(url, "GET", "/v1/models", {"Origin": listed})
        assert status == 401 and headers["access-control-allow-origin"] == listed
        status, headers, _ = raw(url, "OPTIONS", "/v1/chat/completions", {"Origin": "http://localhost:3001", **preflight})
        assert status == 403 and "access-control-allow-origin" not in headers


# ------------------------------------------------------------------ body and queue limits


def guarded_app(settings: ServerSettings, gate: threading.Event | None = None, entered: list | None = None) -> Starlette:
    """The security layer over stand-in generation routes that wait for ``gate``."""

    async def generate(request: Request) -> JSONResponse:
        body = await request.body()
        if request.url.path.endswith("/count_tokens"):  # no generation: answers at once
            return JSONResponse({"input_tokens": 1})
        if entered is not None:
            entered.append(request.url.path)
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.01)
        return JSONResponse({"received": len(body)})

    routes = [Route(path, generate, methods=["POST"]) for path in ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens")]
    return Starlette(routes=routes, middleware=security.middleware(settings), exception_handlers={HTTPException: http_error})


def chunked(url: str, path: str, size: int):
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request("POST", path, body=iter([b"x" * 500] * (size // 500)), encode_chunked=True, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    result = response.status, json.loads(response.read())
    conn.close()
    return result


def test_a_body_over_the_limit_is_refused_at_once_or_while_read():
    with serving(guarded_app(ServerSettings(max_body_bytes=2000))) as url:
        # Announced too large: refused before a byte of it is sent.
        status, _, body = raw(url, "POST", "/v1/chat/completions", {"Content-Length": str(10**9)})
        assert status == 413 and is_openai_error(body) and "2,000" in body["error"]["message"]
        status, _, body = raw(url, "POST", "/v1/messages", {"Content-Length": str(10**9)})
        assert status == 413 and is_anthropic_error(body, "request_too_large")
        # Chunked, so counted as it comes.
        status, body = chunked(url, "/v1/chat/completions", 5000)
        assert status == 413 and is_openai_error(body)
        # Under the limit, either way, the route gets the whole body.
        assert chunked(url, "/v1/chat/completions", 1500) == (200, {"received": 1500})
        assert raw(url, "POST", "/v1/messages", body=b"y" * 2000)[2] == {"received": 2000}


def test_more_requests_than_the_queue_holds_get_429_in_their_protocols_shape():
    gate = threading.Event()
    entered: list[str] = []
    with serving(guarded_app(ServerSettings(max_queued=1), gate, entered)) as url:
        results: list[int] = []
        waiting = [threading.Thread(target=lambda: results.append(raw(url, "POST", "/v1/chat/completions", body=b"{}")[0])) for _ in range(2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while len(entered) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(entered) == 2  # one running, one queued: the queue is full

        status, headers, body = raw(url, "POST", "/v1/chat/completions", body=b"{}")
        assert status == 429 and is_openai_error(body, "rate_limit_error") and headers["retry-after"] == "1"
        status, _, body = raw(url, "POST", "/v1/messages", body=b"{}")
        assert status == 429 and is_anthropic_error(body, "rate_limit_error")
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(anthropic.RateLimitError):
            anthropic.Anthropic(base_url=url, api_key="x", max_retries=0).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        # Counting tokens queues no generation: not limited.
        assert raw(url, "POST", "/v1/messages/count_tokens", body=b"{}")[:3:2] == (200, {"input_tokens": 1})

        gate.set()
        for thread in waiting:
            thread.join(10)
        assert results == [200, 200]
        assert raw(url, "POST", "/v1/chat/completions", body=b"{}")[0] == 200  # room again


# ------------------------------------------------------------------ nothing else is served


@pytest.mark.parametrize("path", ["/", "/../../etc/passwd", "/etc/passwd", "/v1/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2fetc%2fpasswd", "/v1/files", "/docs", "/openapi.json"])
def test_no_files_or_other_routes_are_served(plain_url, path):
    status, _, body = raw(plain_url, "GET", path)
    assert status == 404 and is_openai_error(body)
    assert "root:" not in json.dumps(body)


def test_unknown_anthropic_paths_answer_in_anthropics_shape(plain_url):
    status, _, body = raw(plain_url, "GET", "/v1/messages/batches/../../../../etc/passwd")
    assert status == 404
    status, _, body = raw(plain_url, "GET", "/v1/messages/nothing-here")
    assert status == 404 and is_anthropic_error(body, "not_found_error")


# ------------------------------------------------------------------ streams pass through


def test_streams_pass_through_unbuffered_and_a_disconnect_frees_the_queue_slot():
    release = threading.Event()
    ended: list[str] = []

    async def stream(request: Request) -> StreamingResponse:
        async def chunks():
            try:
                yield b"data: first\n\n"
                while not release.is_set():  # the rest waits: the first chunk must arrive alone
                    await asyncio.sleep(0.01)
                for _ in range(1 if ended else 1000):  # once one was cut, later ones end quick
                    yield b"data: more\n\n"
                    await asyncio.sleep(0.005)
            finally:
                ended.append("closed")

        return StreamingResponse(chunks(), media_type="text/event-stream")

    app = Starlette(
        routes=[Route("/v1/chat/completions", stream, methods=["POST"])],
        middleware=security.middleware(ServerSettings(max_queued=0, api_key=KEY)),
    )
    with serving(app) as url:
        parsed = urlparse(url)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=b"{}", headers={"x-api-key": KEY})
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline() == b"data: first\n"  # before the gate opens: not buffered
        assert raw(url, "POST", "/v1/chat/completions", {"x-api-key": KEY}, b"{}")[0] == 429  # the one slot is taken
        release.set()
        response.readline()
        conn.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-stream
        conn.close()
        deadline = time.monotonic() + 10
        while not ended and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ended == ["closed"]  # the app heard the disconnect and stopped its stream
        status = 429
        while status == 429 and time.monotonic() < deadline:
            status = raw(url, "POST", "/v1/chat/completions", {"x-api-key": KEY}, b"{}")[0]
            time.sleep(0.02)
        # Admitted again: leaving gave the slot back.
        assert status == 200
