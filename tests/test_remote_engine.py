"""RemoteEngine against our real server over real sockets: the same events as the local engine
for the same greedy request (answer, thinking, tool calls), the request translated without
loss, cancel reaching the server's run, and a server process that dies or never comes up
reported within a bounded time with its own last words."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from mlx_backend import ChatMessage, ChatRequest, Engine
from mlx_backend.errors import ContextOverflowError, QwenDeskError
from mlx_backend.events import (
    AnswerDelta, Failed, Finished, PrefillProgress, SamplingParams, ThinkingDelta, ToolCall, ToolCallEvent)
from mlx_backend.loading.loader import load
from mlx_backend.remote import RemoteEngine, ServerProcess
from mlx_backend.remote.process import serve_command
from mlx_backend.remote.requests import chat_body
from mlx_backend.server.app import create_app
from mlx_backend.server.backend import EngineBackend
from mlx_backend.server.openai_messages import chat_request
from tests.support.checkpoints import write_random_checkpoint
from tests.support.scripted_model import ScriptedModel
from tests.support.server import serving

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = 2048
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather", "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("remote") / "tiny-remote", tokenizer="qwen3", max_position_embeddings=CONTEXT)


@pytest.fixture(scope="module")
def loaded(folder):
    return load(folder)


class WatchedBackend(EngineBackend):
    """The headless backend, keeping the reason of every run's Finished (the server's side)."""

    def __init__(self, engine, model_id):
        super().__init__(engine, model_id)
        self.finished: list[Finished] = []
        self.ended = threading.Event()

    def submit(self, request, sink, *, client=""):
        def watching(item):
            if isinstance(item, Finished):
                self.finished.append(item)
                self.ended.set()
            sink(item)

        return super().submit(request, watching, client=client)


@contextlib.contextmanager
def remote(model, tokenizer) -> Iterator[tuple[RemoteEngine, WatchedBackend]]:
    backend = WatchedBackend(Engine(model, tokenizer, name="tiny"), "tiny-remote")
    try:
        with serving(create_app(backend)) as url:
            yield RemoteEngine.connect(url), backend
    finally:
        backend.close()


def ask(text: str, **options) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), sampling=GREEDY, **options)


def content(events) -> list:
    """Everything but the figures that depend on timing."""
    out = []
    for event in events:
        if isinstance(event, Finished):
            stats = event.stats
            out.append(("finished", event.reason, stats.prompt_tokens, stats.generation_tokens))
        elif isinstance(event, PrefillProgress):
            out.append(("prefill", event.total))  # the chunking's ETA and count are the engine's
        elif isinstance(event, ToolCallEvent):
            call = event.call
            out.append(("call", event.index, call.name, call.arguments))
        else:
            out.append(event)
    return out


def squash_prefill(events: list) -> list:
    seen, out = set(), []
    for event in events:
        if isinstance(event, tuple) and event[0] == "prefill":
            if event in seen:
                continue
            seen.add(event)
        out.append(event)
    return out


def test_a_greedy_answer_is_the_local_engines_event_for_event(loaded):
    model, tokenizer = loaded
    request = ask("Tell me about rivers.", enable_thinking=False, max_tokens=24)
    local = list(Engine(model, tokenizer, name="tiny").stream(request))
    with remote(model, tokenizer) as (engine, _backend):
        far = list(engine.stream(request))
    assert [e for e in content(far) if isinstance(e, AnswerDelta)], "the random model wrote nothing"
    assert squash_prefill(content(far)) == squash_prefill(content(local))
    assert "".join(e.text for e in far if isinstance(e, AnswerDelta)) == "".join(e.text for e in local if isinstance(e, AnswerDelta))


def test_thinking_answer_and_tool_calls_arrive_as_the_local_engines(loaded):
    model, tokenizer = loaded
    reply = ('<think>\nParis, so the weather tool.\n</think>\n\nLet me check.\n<tool_call>\n'
             '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    request = ask("Weather in Paris?", enable_thinking=True, tools=(WEATHER,), max_tokens=200, conversation_id="c1")
    local = list(Engine(ScriptedModel(model, tokenizer, [reply]), tokenizer, name="tiny").stream(request))
    with remote(ScriptedModel(model, tokenizer, [reply]), tokenizer) as (engine, _backend):
        far = list(engine.stream(request))
    assert squash_prefill(content(far)) == squash_prefill(content(local))
    assert "".join(e.text for e in far if isinstance(e, ThinkingDelta)).strip() == "Paris, so the weather tool."
    [call] = [e.call for e in far if isinstance(e, ToolCallEvent)]
    assert isinstance(call, ToolCall) and call.arguments == {"city": "Paris"}
    finished = far[-1]
    assert isinstance(finished, Finished) and finished.stats.generation_tps > 0 and finished.stats.ttft_s > 0


def test_the_second_turn_reuses_the_servers_prompt_cache(loaded):
    model, tokenizer = loaded
    first = ask("Hello there.", enable_thinking=False, max_tokens=8, conversation_id="chat-7")
    with remote(model, tokenizer) as (engine, _backend):
        answer = "".join(e.text for e in engine.stream(first) if isinstance(e, AnswerDelta))
        second = replace(first, messages=first.messages + (ChatMessage("assistant", answer), ChatMessage("user", "And then?")))
        finished = [e for e in engine.stream(second) if isinstance(e, Finished)][-1]
    assert finished.stats.cached_tokens > 0


def test_the_request_reaches_the_server_as_it_was_built():
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."), ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", (ToolCall("get_weather", {"city": "Oslo"}, "raw"),)),
            ChatMessage("tool", "rain"), ChatMessage("user", "Thanks; and Paris?"),
        ),
        conversation_id="conv-1", enable_thinking=True, preserve_thinking=True, reasoning_effort="low",
        sampling=SamplingParams(0.6, 0.95, 20, 0.05, 0.5), max_tokens=321, stop=("END",), seed=7, tools=(WEATHER,),
    )
    translated = chat_request(chat_body(request, "m"), max_tokens_limit=100_000, thinks_by_default=True)
    assert translated.stream and translated.include_usage
    assert translated.client_key == "conv-1"  # the server's prompt-cache key
    back = translated.request
    assert [(m.role, m.content) for m in back.messages] == [(m.role, m.content) for m in request.messages]
    assert [(c.name, c.arguments) for c in back.messages[2].tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert replace(back, messages=request.messages) == replace(request, conversation_id=None)


def test_a_refused_request_raises_from_stream_like_the_local_engine(loaded):
    model, tokenizer = loaded
    too_long = ask("word " * (CONTEXT + 100), enable_thinking=False)
    with remote(model, tokenizer) as (engine, _backend):
        with pytest.raises(ContextOverflowError):
            engine.stream(too_long)


def test_the_info_is_the_served_engines(loaded):
    model, tokenizer = loaded
    local = Engine(model, tokenizer, name="tiny").info
    with remote(model, tokenizer) as (engine, _backend):
        info = engine.info
    assert info.name == "tiny-remote"
    for field in ("context_length", "thinking_mode", "thinks_by_default", "weights_bytes", "num_layers", "reasoning_efforts"):
        assert getattr(info, field) == getattr(local, field), field


def test_cancel_stops_the_servers_run(loaded):
    model, tokenizer = loaded
    request = ask("Go on and on.", enable_thinking=False, max_tokens=1500)
    cancel = threading.Event()
    with remote(model, tokenizer) as (engine, backend):
        events = []
        for event in engine.stream(request, cancel):
            events.append(event)
            if isinstance(event, AnswerDelta):
                cancel.set()
        assert backend.ended.wait(10), "the server's run did not end"
        served = backend.finished[-1]
    assert isinstance(events[-1], Finished) and events[-1].reason == "cancelled"
    assert served.reason == "cancelled" and served.stats.generation_tokens < 1500


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_process_killed_mid_answer_gives_failed_in_bounded_time(folder):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = ServerProcess(serve_command("--model", str(folder), "--host", "127.0.0.1", "--port", str(port), "--api-key", "k3y"), env=env, cwd=str(ROOT))
    process.start()
    try:
        url = f"http://127.0.0.1:{port}"
        process.wait_ready(url, "k3y", timeout_s=120)
        engine = RemoteEngine.connect(url, api_key="k3y", process=process)
        events, killed_at = [], None
        for event in engine.stream(ask("Go on and on.", enable_thinking=False, max_tokens=1800)):
            events.append(event)
            if isinstance(event, AnswerDelta) and killed_at is None:
                os.kill(process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
        assert killed_at is not None
        assert time.monotonic() - killed_at < 5
        failed = [e for e in events if isinstance(e, Failed)]
        assert failed and failed[0].message.startswith("The server stopped: it was stopped by SIGKILL")
        assert isinstance(events[-1], Finished) and events[-1].reason == "error"
        assert any(isinstance(e, AnswerDelta) for e in events)  # what came is kept
    finally:
        process.stop(5)


def test_a_server_that_fails_while_starting_says_why():
    script = "import sys, time; print('Loading...', file=sys.stderr); time.sleep(0.3); print('rank 1 (10.0.0.2) could not be reached', file=sys.stderr); sys.exit(2)"
    process = ServerProcess([sys.executable, "-c", script])
    process.start()
    started = time.monotonic()
    with pytest.raises(QwenDeskError, match=r"stopped while starting: rank 1 \(10.0.0.2\) could not be reached"):
        process.wait_ready(f"http://127.0.0.1:{free_port()}", None, timeout_s=30)
    assert time.monotonic() - started < 10
    assert process.returncode == 2


def test_stop_ends_a_server_that_ignores_sigterm_and_its_children():
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              "print(child.pid, file=sys.stderr, flush=True); time.sleep(60)")
    process = ServerProcess([sys.executable, "-c", script])
    process.start()
    deadline = time.monotonic() + 10
    while not process.last_line() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(process.last_line())
    started = time.monotonic()
    assert process.stop(timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert not alive(child)  # the rank it started is gone too


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that died to be reaped is not)."""
    if not Path("/proc").is_dir():  # macOS: no process table to read; signal 0 asks
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True
