"""The OpenAI-compatible routes, driven over real HTTP by the official ``openai`` client (and raw
sockets where a client must misbehave), on tiny random-weight models through the real engine."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from dataclasses import replace
from typing import Iterator, Optional, Sequence

import openai
import pytest

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished
from mlx_backend.errors import RequestError
from mlx_backend.generation.request import PromptRenderer, validate_request
from mlx_backend.generation.sampling import NON_THINKING_PRESET, THINKING_PRESET
from mlx_backend.loading.loader import load
from mlx_backend.server.app import create_app
from mlx_backend.server.backend import EngineBackend, JobEnded
from mlx_backend.server.openai_messages import OpenAIRequestError, chat_request
from mlx_backend.server.settings import ServerSettings
from tests.support.scripted_model import ScriptedModel
from tests.support.server import serving

CONTEXT = 2048
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    folder = write_random_checkpoint(tmp_path_factory.mktemp("openai-qwen3"), tokenizer="qwen3", max_position_embeddings=CONTEXT)
    return load(folder)


class RecordingBackend(EngineBackend):
    """The headless backend, keeping every request it ran and every Finished it saw."""

    def __init__(self, engine, model_id):
        super().__init__(engine, model_id)
        self.requests: list[ChatRequest] = []
        self.finished: list[Finished] = []
        self.ended = threading.Semaphore(0)

    def submit(self, request, sink, *, client=""):
        self.requests.append(request)

        def recording(item):
            if isinstance(item, Finished):
                self.finished.append(item)
                self.ended.release()
            sink(item)

        return super().submit(request, recording, client=client)


@contextlib.contextmanager
def server(loaded, replies: Optional[Sequence[str]] = None, settings: ServerSettings = ServerSettings()) -> Iterator[tuple]:
    """(openai client, base URL, backend, scripted model or None) over a fresh engine."""
    model, tokenizer = loaded
    scripted = ScriptedModel(model, tokenizer, replies) if replies is not None else None
    backend = RecordingBackend(Engine(scripted or model, tokenizer, name="tiny"), "tiny-qwen")
    try:
        with serving(create_app(backend, settings)) as url:
            yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), url, backend, scripted
    finally:
        backend.close()


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ----------------------------------------------------------------------------- chat


def test_models_list_the_served_model(qwen3):
    with server(qwen3) as (client, _url, _backend, _):
        assert [m.id for m in client.models.list()] == ["tiny-qwen"]


def test_a_plain_chat_answers_with_the_scripted_reply_and_usage(qwen3):
    with server(qwen3, ["Hello there."]) as (client, _url, backend, _):
        response = client.chat.completions.create(
            model="whatever-the-client-hard-codes", messages=[user("hi")], max_tokens=20, extra_body=NO_THINKING
        )
    assert response.model == "tiny-qwen"
    assert response.choices[0].message.content == "Hello there."
    assert response.choices[0].finish_reason == "stop"
    stats = backend.finished[-1].stats
    assert response.usage.prompt_tokens == stats.prompt_tokens > 0
    assert response.usage.completion_tokens == stats.generation_tokens > 0
    assert response.usage.total_tokens == stats.prompt_tokens + stats.generation_tokens


def test_a_streamed_chat_sends_deltas_a_finish_and_usage(qwen3):
    with server(qwen3, ["Hello there, streamed."]) as (client, _url, backend, _):
        chunks = list(client.chat.completions.create(
            model="m", messages=[user("hi")], max_tokens=20, stream=True,
            stream_options={"include_usage": True}, extra_body=NO_THINKING,
        ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there, streamed."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == backend.finished[-1].stats.generation_tokens


def test_a_second_turn_reuses_the_first_turns_cache(qwen3):
    with server(qwen3, ["First answer.", "Second answer."]) as (client, _url, backend, _):
        first = client.chat.completions.create(model="m", messages=[user("hi")], max_tokens=20, extra_body=NO_THINKING)
        history = [user("hi"), {"role": "assistant", "content": first.choices[0].message.content}, user("and more?")]
        second = client.chat.completions.create(model="m", messages=history, max_tokens=20, extra_body=NO_THINKING)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.choices[0].message.content == "Second answer."
    # The resent conversation was recognised: only the new turn was prefilled.
    assert backend.requests[0].conversation_id == backend.requests[1].conversation_id
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens


def test_stop_cuts_the_answer_before_the_stop_text(qwen3):
    with server(qwen3, ["alpha beta gamma delta"]) as (client, _url, _backend, _):
        response = client.chat.completions.create(
            model="m", messages=[user("hi")], max_tokens=20, stop="gamma", extra_body=NO_THINKING
        )
    assert response.choices[0].message.content.rstrip() == "alpha beta"
    assert response.choices[0].finish_reason == "stop"


def test_the_same_seed_gives_the_same_text(qwen3):
    def ask(seed, conversation):
        return client.chat.completions.create(
            model="m", messages=[user("tell me a story")], max_tokens=12, temperature=1.0, seed=seed,
            user=conversation, extra_body=NO_THINKING,
        )

    with server(qwen3) as (client, _url, backend, _):
        one, two = ask(7, "a"), ask(7, "b")
    assert one.choices[0].message.content == two.choices[0].message.content
    assert one.usage.completion_tokens == two.usage.completion_tokens
    # The request's own sampling reached the engine, the rest from the non-thinking preset.
    assert backend.requests[0].sampling == replace(NON_THINKING_PRESET, temperature=1.0)
    assert backend.requests[0].seed == 7


def test_unset_sampling_is_filled_from_the_preset_of_the_thinking_mode():
    body = {"messages": [user("hi")], "top_k": 5}
    assert chat_request(body, max_tokens_limit=100, thinks_by_default=True).request.sampling == replace(THINKING_PRESET, top_k=5)
    body["chat_template_kwargs"] = {"enable_thinking": False}
    assert chat_request(body, max_tokens_limit=100, thinks_by_default=True).request.sampling == replace(NON_THINKING_PRESET, top_k=5)
    assert chat_request({"messages": [user("hi")]}, max_tokens_limit=100, thinks_by_default=True).request.sampling is None


def test_content_parts_developer_role_and_tool_history_are_translated():
    body = {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            user("weather?"),
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [WEATHER], "max_completion_tokens": 50, "unknown_field": 1,
    }
    request = chat_request(body, max_tokens_limit=100, thinks_by_default=True).request
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool"]
    assert request.messages[0].content == "be brief"
    assert request.messages[2].tool_calls[0].arguments == {"city": "Paris"}
    assert request.max_tokens == 50 and request.tools == (WEATHER,)
    for bad, param in (
        ({"messages": [user("hi")], "n": 2}, "n"),
        ({"messages": [user("hi")], "max_tokens": 101}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
        ({"messages": [user("hi")], "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ):
        with pytest.raises(OpenAIRequestError) as error:
            chat_request(bad, max_tokens_limit=100, thinks_by_default=True)
        assert error.value.param == param


def test_errors_reach_the_official_client_as_its_exceptions(qwen3):
    with server(qwen3, settings=ServerSettings(max_tokens_limit=100)) as (client, url, _backend, _):
        with pytest.raises(openai.BadRequestError, match="n=1"):
            client.chat.completions.create(model="m", messages=[user("hi")], n=2)
        with pytest.raises(openai.BadRequestError, match="limit of 100"):
            client.chat.completions.create(model="m", messages=[user("hi")], max_tokens=500)
        with pytest.raises(openai.BadRequestError, match="Temperature"):
            client.chat.completions.create(model="m", messages=[user("hi")], temperature=-1)
        connection = http.client.HTTPConnection(url.removeprefix("http://"))
        connection.request("POST", "/v1/chat/completions", body=b"{not json", headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        assert reply.status == 400 and "not valid JSON" in json.loads(reply.read())["error"]["message"]


def test_no_model_loaded_is_503():
    class NoModel:
        def served_model(self):
            return None

        def submit(self, request, sink, *, client=""):
            raise AssertionError("nothing should run")

    with serving(create_app(NoModel())) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(model="m", messages=[user("hi")])
    assert error.value.status_code == 503 and error.value.code == "model_not_loaded"


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_for_the_context_is_refused_before_any_work(qwen3, stream):
    with server(qwen3) as (client, _url, backend, _):
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="m", messages=[user("word " * (CONTEXT + 100))], stream=stream)
    assert error.value.code == "context_length_exceeded" and "tokens long" in error.value.message
    assert backend.finished == []


# ----------------------------------------------------------------------------- tools and reasoning


def test_tools_are_rendered_into_the_prompt_unless_tool_choice_is_none(qwen3):
    _model, tokenizer = qwen3
    with server(qwen3, ["ok", "ok"]) as (client, _url, _backend, scripted):
        client.chat.completions.create(model="m", messages=[user("weather?")], tools=[WEATHER], max_tokens=5, extra_body=NO_THINKING)
        client.chat.completions.create(
            model="m", messages=[user("weather, no tools?")], tools=[WEATHER], tool_choice="none", max_tokens=5, extra_body=NO_THINKING
        )
    with_tools, without = (tokenizer.decode(p) for p in scripted.prompts)
    assert "get_weather" in with_tools and "The weather in a city." in with_tools
    assert "get_weather" not in without


QWEN3_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_a_qwen3_json_tool_call_comes_back_as_tool_calls_and_round_trips(qwen3):
    _model, tokenizer = qwen3
    with server(qwen3, [QWEN3_CALL, "It is sunny in Paris."]) as (client, _url, _backend, scripted):
        first = client.chat.completions.create(model="m", messages=[user("weather in Paris?")], tools=[WEATHER], extra_body=NO_THINKING)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
        assert not choice.message.content
        # The agent runs the tool and sends the result back, as the client's own types.
        history = [
            user("weather in Paris?"),
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ]
        second = client.chat.completions.create(model="m", messages=history, tools=[WEATHER], extra_body=NO_THINKING)
    assert second.choices[0].message.content == "It is sunny in Paris."
    assert second.choices[0].finish_reason == "stop"
    prompt = tokenizer.decode(scripted.prompts[1])
    assert "sunny, 21 C" in prompt and '"city": "Paris"' in prompt


def test_a_streamed_tool_call_arrives_as_indexed_deltas(qwen3):
    two_calls = QWEN3_CALL + "\n" + QWEN3_CALL.replace("Paris", "Oslo")
    with server(qwen3, [two_calls]) as (client, _url, _backend, _):
        chunks = list(client.chat.completions.create(
            model="m", messages=[user("weather in Paris and Oslo?")], tools=[WEATHER], stream=True, extra_body=NO_THINKING
        ))
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"name": "", "arguments": ""})
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_weather"]
    assert [json.loads(calls[i]["arguments"])["city"] for i in sorted(calls)] == ["Paris", "Oslo"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_malformed_tool_call_comes_back_as_text_with_a_warning(qwen3):
    broken = '<tool_call>\n{"name": get_weather}\n</tool_call>'
    with server(qwen3, [broken]) as (client, _url, _backend, _):
        response = client.chat.completions.create(model="m", messages=[user("weather?")], tools=[WEATHER], extra_body=NO_THINKING)
    message = response.choices[0].message
    assert message.tool_calls is None and "get_weather" in message.content and "<tool_call>" in message.content
    assert response.choices[0].finish_reason == "stop"
    assert "could not be read" in response.model_extra["warnings"][0]


def test_reasoning_is_sent_in_both_fields(qwen3):
    reply = "<think>\nLet me think.\n</think>\n\nThe answer."
    with server(qwen3, [reply, reply]) as (client, _url, _backend, _):
        whole = client.chat.completions.create(model="m", messages=[user("why?")])
        chunks = list(client.chat.completions.create(model="m", messages=[user("why, streamed?")], stream=True))
    message = whole.choices[0].message
    assert message.content == "The answer."
    assert message.model_extra["reasoning_content"] == message.model_extra["reasoning"] == "Let me think."
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "Let me think."
    assert "".join(d.model_extra.get("reasoning") or "" for d in deltas) == "Let me think."
    assert "".join(d.content or "" for d in deltas) == "The answer."


def test_a_qwen35_xml_tool_call_comes_back_as_tool_calls(tmp_path_factory):
    from tests.support.hybrid_checkpoints import hybrid_fixtures_available, write_hybrid_checkpoint

    if not hybrid_fixtures_available():
        pytest.skip("the Qwen3.5-family fixtures are not in /work/shared/fixtures")
    loaded = load(write_hybrid_checkpoint(tmp_path_factory.mktemp("openai-qwen35"), kind="dense", tokenizer=True))
    xml_call = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    with server(loaded, [xml_call]) as (client, _url, _backend, scripted):
        response = client.chat.completions.create(model="m", messages=[user("weather in Paris?")], tools=[WEATHER], extra_body=NO_THINKING)
    [call] = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert response.choices[0].finish_reason == "tool_calls"
    assert "get_weather" in loaded[1].decode(scripted.prompts[0])


# ----------------------------------------------------------------------------- disconnects


def _post(url: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(data), data)
    )
    return sock


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_disconnects_cancels_its_generation(qwen3, stream):
    long = {"model": "m", "messages": [user("talk forever")], "max_tokens": CONTEXT - 100, "stream": stream, **NO_THINKING}
    with server(qwen3) as (_client, url, backend, _):
        sock = _post(url, long)
        if stream:
            received = b""
            while received.count(b"data: ") < 3:  # the role chunk, then answer text: it is writing
                chunk = sock.recv(65536)
                assert chunk, "the server closed the stream"
                received += chunk
        else:
            time.sleep(0.3)  # the request is running
        sock.close()
        assert backend.ended.acquire(timeout=30)
    [finished] = backend.finished
    assert finished.reason == "cancelled"
    assert finished.stats.generation_tokens < CONTEXT - 200
    if stream:
        assert finished.stats.generation_tokens >= 2


class EndingBackend(RecordingBackend):
    """Also notes, per request, when its job ended (JobEnded) and whether it produced anything."""

    def __init__(self, engine, model_id):
        super().__init__(engine, model_id)
        self.outcomes: list[list[object]] = []
        self.job_ended = threading.Semaphore(0)

    def submit(self, request, sink, *, client=""):
        items: list[object] = []
        self.outcomes.append(items)

        def noting(item):
            items.append(item)
            if isinstance(item, JobEnded):
                self.job_ended.release()
            sink(item)

        return super().submit(request, noting, client=client)


def _status(sock: socket.socket, timeout: float = 60) -> int:
    sock.settimeout(timeout)
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection without an answer"
        head += chunk
    return int(head.split(b" ")[1])


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_while_queued_is_dropped_before_its_turn(qwen3, stream):
    model, tokenizer = qwen3
    long = {"model": "m", "messages": [user("talk forever")], "max_tokens": CONTEXT - 100, "stream": True, **NO_THINKING}
    waiting = {"model": "m", "messages": [user("my turn?")], "max_tokens": 4, "stream": stream, **NO_THINKING}
    # One running and one waiting is all this server queues: a third request is refused with 429
    # unless the waiting one that left is noticed.
    backend = EndingBackend(Engine(model, tokenizer, name="tiny"), "tiny-qwen")
    try:
        with serving(create_app(backend, ServerSettings(max_queued=1))) as url:
            running = _post(url, long)
            assert _status(running) == 200  # it streams: the model is busy
            queued = _post(url, waiting)
            deadline = time.monotonic() + 10
            while len(backend.outcomes) < 2 or backend.pending() != 1:
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.01)
            queued.close()
            # Dropped while the first still runs: ended with no event at all.
            assert backend.job_ended.acquire(timeout=5)
            assert backend.outcomes[1] == [JobEnded()] and backend.pending() == 0
            assert not backend.finished
            # Its place in the queue is free again.
            third = _post(url, waiting)
            time.sleep(0.3)
            running.close()
            assert _status(third) == 200
            assert backend.ended.acquire(timeout=30) and backend.ended.acquire(timeout=30)
            third.close()
    finally:
        backend.close()
    # The engine ran the first and the third, never the one that left.
    assert len(backend.finished) == 2 and backend.finished[0].reason == "cancelled"
    assert [len(items) for items in backend.outcomes][1] == 1


# ----------------------------------------------------------------------------- text completion


def test_a_text_completion_continues_the_prompt_as_is(qwen3):
    _model, tokenizer = qwen3
    with server(qwen3, [" there was a fox.", " again."]) as (client, _url, backend, scripted):
        response = client.completions.create(model="m", prompt="Once upon a time", max_tokens=20)
        # (a prompt of 3+ tokens: ScriptedModel takes a 1-token prefill for a reply step)
        chunks = list(client.completions.create(model="m", prompt="Once more, with feeling", max_tokens=20, stream=True))
    assert scripted.prompts[0] == tokenizer.encode("Once upon a time")  # no chat template around it
    assert response.choices[0].text == " there was a fox." and response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == len(tokenizer.encode("Once upon a time"))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " again."
    assert backend.requests[0].raw_prompt == "Once upon a time" and backend.requests[0].conversation_id is None


def test_a_raw_prompt_request_is_validated_and_rendered_as_is(qwen3):
    _model, tokenizer = qwen3
    with pytest.raises(RequestError, match="prompt only"):
        validate_request(ChatRequest(messages=(ChatMessage("user", "hi"),), raw_prompt="text"))
    with pytest.raises(RequestError, match="empty"):
        validate_request(ChatRequest(messages=(), raw_prompt=""))
    request = ChatRequest(messages=(), raw_prompt="<|im_start|>user\nhi")
    validate_request(request)
    renderer = PromptRenderer(tokenizer)
    assert renderer.thinking_for(request) is False
    assert renderer.prompt(request, False) == tokenizer.encode("<|im_start|>user\nhi")
