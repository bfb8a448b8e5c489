"""The local server inside the app: a real random-weight model on the real worker thread,
shared by the window and the server, with the real uvicorn on a free loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import anthropic
import openai
import pytest
from PySide6.QtGui import QGuiApplication

from app.server.controller import NETWORK_NEEDS_KEY, LocalServerController
from app.server.worker_backend import WorkerBackend
from app.settings import Settings
from app.worker.worker import WorkerClient
from mlx_backend import ChatMessage, ChatRequest, Finished
from mlx_backend.events import AnswerDelta, SamplingParams
from mlx_backend.server.backend import JobEnded
from tests.support.workers import loaded_worker
from tests.test_app_chat import Builder, data_dir, last_assistant, open_window, type_and_send, wait_idle  # noqa: F401 (data_dir: a fixture)

ARGMAX = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


def chat(text: str = "hi", max_tokens: int = 6) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), max_tokens=max_tokens, sampling=ARGMAX,
                       enable_thinking=False)


@pytest.fixture(scope="module")
def worker(qapp, tiny_checkpoint: Path):
    client = loaded_worker(qapp, tiny_checkpoint)  # the app's own loader
    yield client
    assert client.shutdown(10000)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture
def app(qtbot, worker, data_dir):
    """The main window with its local server attached (off until a test turns it on)."""
    window = open_window(qtbot, worker, data_dir, Builder(max_tokens=24, delay_s=0.02))
    window.settings.server_port = free_port()
    server = LocalServerController(worker, window.settings, parent=window)
    window.set_local_server(server)
    yield window, server
    server.stop()
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: not worker.is_busy(), timeout=20000)


def turn_on(qtbot, window, server) -> str:
    window.menus.server_action.trigger()
    qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
    return server.state.url


class Collector:
    """A sink: everything the backend sends, in order, on whatever thread."""

    def __init__(self, on_event=None) -> None:
        self.items: list[object] = []
        self.ended = threading.Event()
        self.on_event = on_event

    def __call__(self, item: object) -> None:
        self.items.append(item)
        if self.on_event is not None:
            self.on_event(item)
        if isinstance(item, JobEnded):
            self.ended.set()

    def answer(self) -> str:
        return "".join(i.text for i in self.items if isinstance(i, AnswerDelta))

    def finished(self):
        return [i for i in self.items if isinstance(i, Finished)]


def hold_worker(worker: WorkerClient) -> threading.Event:
    """Keep the worker busy until the returned event is set, so what follows queues."""
    release = threading.Event()

    def job(_engine, _cancel):
        release.wait(30)
        return iter(())

    worker.submit(job, needs_model=False, name="hold")
    return release


def server_pending(worker: WorkerClient) -> list[str]:
    return [job_id for job_id in worker.pending_job_ids if job_id.startswith("server-")]


def test_a_server_request_and_a_window_chat_share_the_model_and_both_complete(qtbot, app, worker):
    window, server = app
    url = turn_on(qtbot, window, server)
    assert window.status_panel.server_label.text() == f"Local server on {url}"
    labels: list[str] = []
    server.answeringChanged.connect(lambda _on: labels.append(window.status_panel.server_label.text()))

    turns: list[tuple] = []
    window.chat.turnFinished.connect(lambda *turn: turns.append(turn))
    type_and_send(qtbot, window, "tell me a story")
    qtbot.waitUntil(lambda: window.chat.generating, timeout=5000)
    # While the window streams, the server answers HTTP (no GUI thread needed for /v1/models)...
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [Path(worker.model_name).name]
    # ...and takes chat requests over HTTP from the official clients, queued behind the window's.
    result: dict[str, object] = {}

    def client_thread():
        stream = client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "hello"}], max_tokens=6,
            temperature=0.0, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        result["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        result["usage"] = chunks[-1].usage
        reply = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0).messages.create(
            model="anything", max_tokens=6, messages=[{"role": "user", "content": "and you?"}])
        result["anthropic"] = reply

    thread = threading.Thread(target=client_thread)
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=60000)
    wait_idle(qtbot, window)

    assert result["text"] and result["usage"].completion_tokens > 0
    assert result["anthropic"].usage.output_tokens > 0 and result["anthropic"].stop_reason in ("end_turn", "max_tokens")
    assert turns and turns[0][2] == "complete" and last_assistant(window).answer_text
    # The window said so while the server answered, and went back to the address after.
    assert labels[0] == "Local server: answering a request"
    # (The job may outlive the HTTP answer by a moment: it re-encodes the reply for the cache.)
    qtbot.waitUntil(lambda: window.status_panel.server_label.text() == f"Local server on {url}", timeout=10000)


def test_window_and_server_take_turns_first_come_first_served(qtbot, app, worker):
    window, server = app
    turn_on(qtbot, window, server)
    order: list[str] = []
    window.chat.turnFinished.connect(lambda *_: order.append("window"))
    sinks = []

    def server_requests(names):
        for name in names:
            sink = Collector(on_event=lambda item, n=name: isinstance(item, JobEnded) and order.append(n))
            sinks.append(sink)
            server.backend.submit(chat(name), sink)

    release = hold_worker(worker)
    server_requests(["s1", "s2", "s3"])
    qtbot.waitUntil(lambda: len(server_pending(worker)) == 3, timeout=5000)
    type_and_send(qtbot, window, "my turn")
    server_requests(["s4", "s5", "s6"])
    qtbot.waitUntil(lambda: len(server_pending(worker)) == 6, timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: len(order) == 7, timeout=30000)

    # The window's message ran after the requests ahead of it and before those behind it.
    assert order == ["s1", "s2", "s3", "window", "s4", "s5", "s6"]
    assert all(len(sink.finished()) == 1 for sink in sinks)


def test_cancelling_a_server_request_queued_or_running(qtbot, app, worker):
    window, server = app
    turn_on(qtbot, window, server)
    backend = server.backend

    # Cancelled before it even reached the GUI thread: it never queues.
    early = Collector()
    backend.submit(chat(max_tokens=400), early)()
    qtbot.waitUntil(early.ended.is_set, timeout=5000)
    assert early.items == [JobEnded()]

    # Queued behind other work, cancelled from another thread (as uvicorn's is): dropped.
    release = hold_worker(worker)
    queued = Collector()
    cancel = backend.submit(chat(max_tokens=400), queued)
    qtbot.waitUntil(lambda: len(server_pending(worker)) == 1, timeout=5000)
    threading.Thread(target=cancel).start()
    qtbot.waitUntil(queued.ended.is_set, timeout=5000)
    assert queued.items == [JobEnded()] and server_pending(worker) == []
    release.set()

    # Running: stops within a token (deltas come batched, so "within a batch").
    cancel_running = []
    running = Collector(on_event=lambda item: isinstance(item, AnswerDelta) and cancel_running[0]())
    cancel_running.append(backend.submit(chat(max_tokens=400), running))
    qtbot.waitUntil(running.ended.is_set, timeout=30000)
    [finished] = running.finished()
    assert finished.reason == "cancelled" and finished.stats.generation_tokens < 400
    assert not server.answering


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_client_that_leaves_while_its_request_queues_is_dropped_from_the_worker_queue(qtbot, app, worker, path):
    window, server = app
    url = turn_on(qtbot, window, server)
    ran: list[bool] = []
    server.answeringChanged.connect(ran.append)
    release = hold_worker(worker)
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), len(body), body))
    qtbot.waitUntil(lambda: len(server_pending(worker)) == 1, timeout=5000)
    sock.close()
    # Out of the shared queue while the worker is still busy with the job ahead of it...
    qtbot.waitUntil(lambda: server_pending(worker) == [], timeout=5000)
    release.set()
    qtbot.waitUntil(lambda: not worker.is_busy(), timeout=10000)
    # ...so it never ran.
    assert ran == [] and not server.answering


def test_count_tokens_through_the_worker_is_the_replys_input_tokens(qtbot, app, worker):
    window, server = app
    url = turn_on(qtbot, window, server)
    answering: list[bool] = []
    server.answeringChanged.connect(answering.append)
    fields = {"system": "Be brief.", "messages": [{"role": "user", "content": "count this please"}]}
    result: dict[str, object] = {}

    def client_thread():
        client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=30)
        result["count"] = client.messages.count_tokens(model="m", **fields)
        answering_after_count = list(answering)
        result["answering_after_count"] = answering_after_count
        result["reply"] = client.messages.create(model="m", max_tokens=4, metadata={"user_id": "count-test"}, **fields)

    thread = threading.Thread(target=client_thread)
    thread.start()
    qtbot.waitUntil(lambda: not thread.is_alive(), timeout=60000)
    reply = result["reply"]
    # (input_tokens leaves out what the prompt cache held; a fresh conversation holds nothing.)
    assert result["count"].input_tokens == reply.usage.input_tokens + reply.usage.cache_read_input_tokens > 0
    assert result["answering_after_count"] == []  # counting runs no model: not "answering"


def test_stopping_the_server_ends_its_running_request_at_once(qtbot, app, worker):
    window, server = app
    turn_on(qtbot, window, server)
    sink = Collector()
    server.backend.submit(chat(max_tokens=400), sink)
    qtbot.waitUntil(lambda: server.answering, timeout=10000)
    started = time.monotonic()
    assert server.stop()
    assert time.monotonic() - started < 2.0  # what quitting the app waits for
    assert sink.ended.is_set() and server.state.kind == "stopped"
    assert not window.status_panel.server_label.isVisible()


def test_the_switch_in_settings_and_the_model_menu_opens_and_closes_the_socket(qtbot, app):
    window, server = app
    port = window.settings.server_port
    prefs = window.open_preferences()
    assert not accepts(port)

    prefs.server_check.setChecked(True)
    qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
    assert accepts(port)
    assert window.settings.server_enabled and window.menus.server_action.isChecked()
    assert prefs.server_status.text() == f"Listening on http://127.0.0.1:{port}"

    window.menus.server_action.trigger()  # off from the Model menu
    assert server.state.kind == "stopped" and not accepts(port)
    assert not window.settings.server_enabled and not prefs.server_check.isChecked()

    window.menus.server_action.trigger()
    qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
    assert accepts(port) and prefs.server_check.isChecked()


def test_a_port_in_use_is_named_in_the_window_and_another_port_works(qtbot, app):
    window, server = app
    with socket.socket() as other_app:
        other_app.bind(("127.0.0.1", 0))
        other_app.listen()
        busy = other_app.getsockname()[1]
        window.settings.server_port = busy
        prefs = window.open_preferences()
        prefs.server_check.setChecked(True)
        assert server.state.kind == "failed"
        assert f"Port {busy} is already in use by another app" in server.state.message
        assert prefs.server_status.text() == server.state.message and prefs.server_status.isVisible()
        assert window.status_panel.server_label.toolTip() == server.state.message

        port = free_port()
        prefs.server_port_spin.setValue(port)
        qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
        assert accepts(port) and window.settings.server_port == port


def test_network_mode_needs_a_key_and_turning_it_on_makes_one(qtbot, app):
    window, server = app
    settings: Settings = window.settings
    settings._q.setValue("server/allow_network", True)  # as a hand-edited settings file could say
    assert settings.server_api_key == ""
    window.menus.server_action.trigger()
    assert server.state.kind == "failed" and server.state.message == NETWORK_NEEDS_KEY
    assert not accepts(settings.server_port)

    prefs = window.open_preferences()
    prefs.server_network_check.setChecked(False)
    assert not prefs.server_key_edit.isVisible()
    qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
    prefs.server_network_check.setChecked(True)
    key = settings.server_api_key
    assert len(key) >= 24 and prefs.server_key_edit.text() == key and prefs.server_key_edit.isVisible()
    qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
    assert server.state.network_url.endswith(f":{settings.server_port}") and accepts(settings.server_port)
    prefs.server_key_copy.click()
    assert QGuiApplication.clipboard().text() == key
    # Off and on again keeps the key other devices were given.
    prefs.server_network_check.setChecked(False)
    prefs.server_network_check.setChecked(True)
    assert settings.server_api_key == key


def test_served_model_follows_loads(qtbot, worker, tiny_checkpoint):
    backend = WorkerBackend(worker)
    assert backend.served_model().id == Path(tiny_checkpoint).name
    seen_while_loading = []
    worker.loadStarted.connect(lambda _name: seen_while_loading.append(backend.served_model()))
    with qtbot.waitSignal(worker.modelLoaded, timeout=30000):
        worker.load_model(str(tiny_checkpoint))
    assert seen_while_loading == [None]
    served = backend.served_model()
    assert served.id == Path(tiny_checkpoint).name and served.info is worker.model_info
    backend.close()


def test_the_app_starts_its_server_at_launch_when_the_setting_is_on(qtbot, worker, data_dir):
    from app.gui import _attach_local_server

    window = open_window(qtbot, worker, data_dir)
    window.settings.server_port = port = free_port()
    window.settings.server_enabled = True
    server = _attach_local_server(window, worker, window.settings)
    try:
        qtbot.waitUntil(lambda: server.state.kind == "listening", timeout=10000)
        assert accepts(port) and window.menus.server_action.isChecked() and window.menus.server_action.isEnabled()
        assert window.status_panel.server_label.text() == f"Local server on http://127.0.0.1:{port}"
    finally:
        assert server.stop()
    assert not accepts(port)
