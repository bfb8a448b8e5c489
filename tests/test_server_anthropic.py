"""The Anthropic-compatible /v1/messages, driven over HTTP by the official ``anthropic`` client.

A tiny random-weight Qwen3 (real Qwen3 tokenizer and template) writes scripted replies
(tests/support/scripted_model.py) through the real engine, so what is checked is the whole
path: request translation, the prompt the template renders, decoding, caches, the reply.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.error
import urllib.request

import anthropic
import pytest

from mlx_backend import Engine
from mlx_backend.events import AnswerDelta, Failed, Finished, GenerationStats, PrefillProgress
from mlx_backend.loading.loader import load
from mlx_backend.server.app import create_app
from mlx_backend.server.backend import EngineBackend, JobEnded
from mlx_backend.server.settings import ServerSettings
from tests.support.scripted_model import ScriptedModel
from tests.support.server import serving

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city today.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
QWEN3_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


class _Scripted(ScriptedModel):
    """ScriptedModel, but a lone token fed right after an end of turn is not a new prompt.

    After a reply the engine re-encodes it as the next prompt will show it; for a plain reply
    that is just the "\n" after <|im_end|>, one token, which ScriptedModel would take for a
    new prompt and answer with the next scripted reply. (A generation prompt never ends with
    "<|im_end|>\n".) Belongs in tests/support/scripted_model.py.
    """

    def _next_token(self, fed):
        if len(self._history) >= 2 and self._history[-2] == self._end and fed[0] != self._end:
            return None
        return super()._next_token(fed)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    folder = write_random_checkpoint(tmp_path_factory.mktemp("anthropic-qwen3"), tokenizer="qwen3", max_position_embeddings=2048)
    return load(folder)


@contextlib.contextmanager
def _server(checkpoint, replies, settings: ServerSettings = ServerSettings()):
    """The real server over a model that writes ``replies``; yields (client, scripted model, tokenizer)."""
    model, tokenizer = checkpoint
    scripted = _Scripted(model, tokenizer, replies)
    backend = EngineBackend(Engine(scripted, tokenizer, name="tiny"), "tiny-qwen3")
    try:
        with serving(create_app(backend, settings)) as url:
            yield anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=60), scripted, tokenizer
    finally:
        backend.close()


def _prompt(scripted, tokenizer, index=-1) -> str:
    return tokenizer.decode(scripted.prompts[index])


def _user(text):
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------------------- plain replies


def test_a_plain_message_carries_the_reply_the_real_model_id_and_usage(qwen3):
    with _server(qwen3, ["Hello there."]) as (client, scripted, tokenizer):
        reply = client.messages.create(model="claude-sonnet-4-5", max_tokens=50, system="You are terse.", messages=_user("hi"))
    assert reply.model == "tiny-qwen3" and reply.id.startswith("msg_") and reply.role == "assistant"
    assert [(b.type, b.text) for b in reply.content] == [("text", "Hello there.")]
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    prompt = _prompt(scripted, tokenizer)
    assert "You are terse." in prompt and "hi" in prompt
    assert reply.usage.input_tokens == len(scripted.prompts[0]) and reply.usage.cache_read_input_tokens == 0
    assert reply.usage.output_tokens == len(tokenizer.encode("Hello there.")) + 1  # and <|im_end|>


def test_a_system_prompt_in_blocks_reaches_the_prompt(qwen3):
    system = [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two.", "cache_control": {"type": "ephemeral"}}]
    with _server(qwen3, ["ok"]) as (client, scripted, tokenizer):
        client.messages.create(model="m", max_tokens=20, system=system, messages=_user("hi"))
    prompt = _prompt(scripted, tokenizer)
    assert "Rule one." in prompt and "Rule two." in prompt


def test_a_streamed_message_assembles_into_the_same_message(qwen3):
    with _server(qwen3, ["Streaming works fine."]) as (client, _scripted, _tokenizer):
        with client.messages.stream(model="m", max_tokens=50, messages=_user("hi")) as stream:
            events = [event.type for event in stream]
            final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(events)
    assert [(b.type, b.text) for b in final.content] == [("text", "Streaming works fine.")]
    assert final.stop_reason == "end_turn" and final.model == "tiny-qwen3"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_max_tokens_ends_with_max_tokens(qwen3):
    with _server(qwen3, ["one two three four five six seven eight nine ten"]) as (client, _s, _t):
        reply = client.messages.create(model="m", max_tokens=3, messages=_user("count"))
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3


# ---------------------------------------------------------------------------- caches


@pytest.mark.parametrize("metadata", [None, {"user_id": "session-1"}], ids=["by-prefix", "by-user-id"])
def test_a_second_turn_reads_the_first_turns_prompt_cache(qwen3, metadata):
    extra = {"metadata": metadata} if metadata else {}
    with _server(qwen3, ["First answer.", "Second answer."]) as (client, _s, _t):
        first = client.messages.create(model="m", max_tokens=30, system="Be kind.", messages=_user("one"), **extra)
        history = [*_user("one"), {"role": "assistant", "content": [b.to_dict() for b in first.content]}, *_user("two")]
        second = client.messages.create(model="m", max_tokens=30, system="Be kind.", messages=history, **extra)
    assert first.usage.cache_read_input_tokens == 0
    assert second.content[0].text == "Second answer."
    # Everything up to the new question was served from the cache, none of it prefilled again.
    assert second.usage.cache_read_input_tokens >= first.usage.input_tokens
    assert second.usage.input_tokens < second.usage.cache_read_input_tokens


# ---------------------------------------------------------------------------- stop sequences


def test_a_stop_sequence_cuts_the_answer_and_is_named(qwen3):
    with _server(qwen3, ["Alpha beta END gamma delta epsilon"]) as (client, _s, _t):
        reply = client.messages.create(model="m", max_tokens=40, stop_sequences=["NEVER", "END"], messages=_user("go"))
    assert reply.content[0].text == "Alpha beta "
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == "END"


def test_a_streamed_stop_sequence_is_named_in_the_final_message(qwen3):
    with _server(qwen3, ["Alpha beta END gamma delta"]) as (client, _s, _t):
        with client.messages.stream(model="m", max_tokens=40, stop_sequences=["END"], messages=_user("go")) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
    assert text == "Alpha beta " and final.content[0].text == text
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "END"


def test_without_a_match_stop_sequences_change_nothing(qwen3):
    with _server(qwen3, ["No stop here."]) as (client, _s, _t):
        reply = client.messages.create(model="m", max_tokens=40, stop_sequences=["END"], messages=_user("go"))
    assert reply.content[0].text == "No stop here." and reply.stop_reason == "end_turn" and reply.stop_sequence is None


# ---------------------------------------------------------------------------- tools


def test_tools_are_rendered_and_a_call_comes_back_as_tool_use_then_a_result_continues(qwen3):
    with _server(qwen3, [QWEN3_CALL, "It is sunny in Paris."]) as (client, scripted, tokenizer):
        call = client.messages.create(model="m", max_tokens=80, tools=[WEATHER_TOOL], messages=_user("Weather in Paris?"))
        prompt = _prompt(scripted, tokenizer)
        assert "<tools>" in prompt and "get_weather" in prompt and "The weather in a city today." in prompt
        [use] = [b for b in call.content if b.type == "tool_use"]
        assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id.startswith("toolu_")
        assert call.stop_reason == "tool_use"
        assert not any(b.type == "text" and "<tool_call>" in b.text for b in call.content)

        history = [
            *_user("Weather in Paris?"),
            {"role": "assistant", "content": [b.to_dict() for b in call.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "sunny, 21C"}]}]},
        ]
        follow = client.messages.create(model="m", max_tokens=80, tools=[WEATHER_TOOL], messages=history)
        prompt = _prompt(scripted, tokenizer)
    assert follow.content[0].text == "It is sunny in Paris." and follow.stop_reason == "end_turn"
    assert "<tool_response>\nsunny, 21C\n</tool_response>" in prompt
    assert '"name": "get_weather"' in prompt  # our call, rendered back by the template
    assert follow.usage.cache_read_input_tokens > 0


def test_a_streamed_tool_call_arrives_as_input_json_delta(qwen3):
    with _server(qwen3, [QWEN3_CALL]) as (client, _s, _t):
        with client.messages.stream(model="m", max_tokens=80, tools=[WEATHER_TOOL], messages=_user("Weather?")) as stream:
            deltas = [e.delta for e in stream if e.type == "content_block_delta"]
            final = stream.get_final_message()
    partial = "".join(d.partial_json for d in deltas if d.type == "input_json_delta")
    assert json.loads(partial) == {"city": "Paris"}
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and final.stop_reason == "tool_use"


def test_tool_choice_none_offers_no_tools(qwen3):
    with _server(qwen3, ["Plain."]) as (client, scripted, tokenizer):
        client.messages.create(model="m", max_tokens=20, tools=[WEATHER_TOOL], tool_choice={"type": "none"}, messages=_user("hi"))
    assert "get_weather" not in _prompt(scripted, tokenizer)


def test_a_malformed_tool_call_comes_back_as_text(qwen3):
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    with _server(qwen3, [broken]) as (client, _s, _t):
        reply = client.messages.create(model="m", max_tokens=80, tools=[WEATHER_TOOL], messages=_user("Weather?"))
    assert [b.type for b in reply.content] == ["text"] and "<tool_call>" in reply.content[0].text
    assert '"city"' in reply.content[0].text and reply.stop_reason == "end_turn"


# ---------------------------------------------------------------------------- thinking


def test_thinking_comes_back_as_a_thinking_block_whole_and_streamed(qwen3):
    thought = "<think>\nThe user greets me.\n</think>\n\nHello!"
    with _server(qwen3, [thought, "Again."]) as (client, scripted, tokenizer):
        whole = client.messages.create(model="m", max_tokens=60, thinking={"type": "enabled", "budget_tokens": 1024}, messages=_user("hi"))
        with client.messages.stream(model="m", max_tokens=60, thinking={"type": "enabled", "budget_tokens": 1024}, messages=_user("hi")) as stream:
            kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
            streamed = stream.get_final_message()
        # The thinking block goes back in the history as clients send it.
        history = [*_user("hi"), {"role": "assistant", "content": [b.to_dict() for b in whole.content]}, *_user("more")]
        again = client.messages.create(model="m", max_tokens=60, messages=history)
    for message in (whole, streamed):
        assert [b.type for b in message.content] == ["thinking", "text"]
        assert message.content[0].thinking == "The user greets me." and message.content[1].text == "Hello!"
    assert "thinking_delta" in kinds and "signature_delta" in kinds
    assert again.content[0].text == "Again."


def test_thinking_disabled_reaches_the_template(qwen3):
    with _server(qwen3, ["Quick."]) as (client, scripted, tokenizer):
        client.messages.create(model="m", max_tokens=20, thinking={"type": "disabled"}, messages=_user("hi"))
    # Qwen3's template closes an empty think block when thinking is off.
    assert _prompt(scripted, tokenizer).endswith("<think>\n\n</think>\n\n")


# ---------------------------------------------------------------------------- errors


def test_a_prompt_too_long_for_the_context_is_a_bad_request_whole_and_streamed(qwen3):
    with _server(qwen3, []) as (client, _s, _t):
        with pytest.raises(anthropic.BadRequestError, match="tokens long") as caught:
            client.messages.create(model="m", max_tokens=20, messages=_user("word " * 3000))
        assert caught.value.body["error"]["type"] == "invalid_request_error"
        with pytest.raises(anthropic.BadRequestError, match="tokens long"):
            with client.messages.stream(model="m", max_tokens=20, messages=_user("word " * 3000)) as stream:
                list(stream)


def _post(url, body) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/v1/messages", json.dumps(body).encode(), {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_malformed_requests_are_bad_requests_naming_the_field(qwen3):
    model, tokenizer = qwen3
    backend = EngineBackend(Engine(model, tokenizer, name="tiny"), "tiny-qwen3")
    try:
        with serving(create_app(backend, ServerSettings(max_tokens_limit=100))) as url:
            status, body = _post(url, {"model": "m", "messages": _user("hi")})
            assert status == 400 and body == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required."}}
            client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
            cases = [
                ({"max_tokens": 101, "messages": _user("hi")}, "max_tokens: 101 is more than this server allows"),
                ({"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "messages.0.content.0: this model reads text only"),
                ({"max_tokens": 10, "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
                ({"max_tokens": 10, "messages": _user("hi"), "tools": [{"name": "f"}]}, "tools.0.input_schema"),
                ({"max_tokens": 10, "messages": _user("hi"), "extra_body": {"temperature": "hot"}}, "temperature: must be a number"),
                ({"max_tokens": 10, "messages": _user("hi"), "output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config.format"),
                ({"max_tokens": 10, "messages": [*_user("hi"), {"role": "assistant", "content": "Sure"}]}, "messages.1: the last message is the assistant's"),
            ]
            for fields, message in cases:
                with pytest.raises(anthropic.BadRequestError, match=message):
                    client.messages.create(model="m", **fields)
    finally:
        backend.close()


class _NoModel:
    def served_model(self):
        return None

    def submit(self, request, sink, *, client=""):
        raise AssertionError("nothing may be submitted without a model")


def test_no_loaded_model_is_a_503_in_anthropics_shape():
    with serving(create_app(_NoModel())) as url:
        client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.InternalServerError, match="No model is loaded") as caught:
            client.messages.create(model="m", max_tokens=10, messages=_user("hi"))
    assert caught.value.status_code == 503 and caught.value.body["error"]["type"] == "overloaded_error"


class _EndlessBackend:
    """Writes a word every few milliseconds until cancelled; records the cancel."""

    def __init__(self, served):
        self._served = served
        self.cancelled = threading.Event()

    def served_model(self):
        return self._served

    def submit(self, request, sink, *, client=""):
        def write():
            sink(PrefillProgress(0, 1, None))
            while not self.cancelled.wait(0.01):
                sink(AnswerDelta("word "))
            sink(Finished("cancelled", GenerationStats(1, 0, 1, 0.0, 0.0, 0.0, 0.0)))
            sink(JobEnded())

        threading.Thread(target=write, daemon=True).start()
        return self.cancelled.set


def test_a_client_that_leaves_cancels_the_generation():
    from mlx_backend.server.backend import ServedModel

    for streamed in (False, True):
        backend = _EndlessBackend(ServedModel("endless", None))
        with serving(create_app(backend)) as url:
            client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0, timeout=1.0)
            if streamed:
                with client.messages.stream(model="m", max_tokens=10, messages=_user("hi")) as stream:
                    next(iter(stream))
            else:
                with pytest.raises(anthropic.APITimeoutError):
                    client.messages.create(model="m", max_tokens=10, messages=_user("hi"))
            assert backend.cancelled.wait(5), f"streamed={streamed}: the generation went on after the client left"


class _BusyBackend:
    """A model busy with someone else: requests only wait (no event at all); records cancels."""

    def __init__(self, served):
        self._served = served
        self.cancelled = threading.Event()

    def served_model(self):
        return self._served

    def submit(self, request, sink, *, client=""):
        return self.cancelled.set


@pytest.mark.parametrize("streamed", [False, True])
def test_a_client_that_leaves_while_queued_is_noticed_before_its_turn(streamed):
    import socket

    from mlx_backend.server.backend import ServedModel

    backend = _BusyBackend(ServedModel("busy", None))
    with serving(create_app(backend)) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"model": "m", "max_tokens": 10, "stream": streamed, "messages": _user("hi")}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
            assert not backend.cancelled.wait(0.5)  # still waiting for the model, as it should
        assert backend.cancelled.wait(5), "the request stayed queued after its client left"


class _FailingBackend:
    """Writes a little, then fails as the engine does on an MLX error."""

    def __init__(self, served):
        self._served = served

    def served_model(self):
        return self._served

    def submit(self, request, sink, *, client=""):
        for item in (PrefillProgress(0, 1, None), AnswerDelta("Hal"), Failed("Out of memory while answering."), JobEnded()):
            sink(item)
        return lambda: None


def test_a_generation_that_fails_is_an_api_error_whole_and_streamed():
    from mlx_backend.server.backend import ServedModel

    with serving(create_app(_FailingBackend(ServedModel("failing", None)))) as url:
        client = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        with pytest.raises(anthropic.InternalServerError, match="Out of memory") as caught:
            client.messages.create(model="m", max_tokens=10, messages=_user("hi"))
        assert caught.value.body["error"]["type"] == "api_error"
        with pytest.raises(anthropic.APIStatusError, match="Out of memory"):
            with client.messages.stream(model="m", max_tokens=10, messages=_user("hi")) as stream:
                list(stream)


def test_tool_results_become_tool_messages_in_order_and_errors_say_so():
    from mlx_backend.server.anthropic_messages import parse_messages_request

    messages = [
        *_user("Weather in Paris and Rome?"),
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities.", "signature": ""},
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no such city"}], "is_error": True},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]
    request = parse_messages_request({"max_tokens": 5, "messages": messages, "tools": [WEATHER_TOOL]}, max_tokens_limit=100).request
    assert [m.role for m in request.messages] == ["user", "assistant", "tool", "tool", "user"]
    assistant = request.messages[1]
    assert [(c.name, c.arguments) for c in assistant.tool_calls] == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]
    assert "Two cities." in assistant.content and assistant.content.endswith("Checking both.")
    assert [m.content for m in request.messages[2:]] == ["sunny", "Error: no such city", "And tomorrow?"]
    assert request.tools == ({"type": "function", "function": {"name": "get_weather", "description": WEATHER_TOOL["description"], "parameters": WEATHER_TOOL["input_schema"]}},)


COUNTED_REQUESTS = [
    {"messages": _user("hi")},
    {"system": "You are terse.", "messages": [*_user("Weather in Paris?"), {"role": "assistant", "content": "Let me look."}, *_user("Thanks, and Rome?")]},
    {"system": [{"type": "text", "text": "Use tools."}], "messages": _user("Weather in Paris?"), "tools": [WEATHER_TOOL]},
    {"messages": _user("Think about it."), "thinking": {"type": "enabled", "budget_tokens": 1024}},
    {"messages": _user("Answer fast."), "thinking": {"type": "disabled"}},
    {"messages": _user("No tools now."), "tools": [WEATHER_TOOL], "tool_choice": {"type": "none"}},
]


@pytest.mark.parametrize("fields", COUNTED_REQUESTS, ids=["plain", "system-history", "tools", "thinking", "no-thinking", "tool-choice-none"])
def test_count_tokens_is_the_input_tokens_the_reply_reports(qwen3, fields):
    with _server(qwen3, ["Fine."]) as (client, scripted, tokenizer):
        counted = client.messages.count_tokens(model="m", **fields)
        # (The first request of a fresh server: nothing cached, input_tokens is the whole prompt.)
        reply = client.messages.create(model="m", max_tokens=5, **fields)
    assert reply.usage.cache_read_input_tokens == 0
    assert counted.input_tokens == reply.usage.input_tokens == len(scripted.prompts[0])


def test_count_tokens_refuses_what_messages_refuses_and_counts_what_is_too_long(qwen3):
    with _server(qwen3, []) as (client, _scripted, tokenizer):
        with pytest.raises(anthropic.BadRequestError, match="messages.0.role"):
            client.messages.count_tokens(model="m", messages=[{"role": "robot", "content": "hi"}])
        # Too long for the context: still counted, so a client learns by how much.
        long = client.messages.count_tokens(model="m", messages=_user("word " * 3000))
        assert long.input_tokens > 2048
    with serving(create_app(_NoModel())) as url:
        with pytest.raises(anthropic.InternalServerError, match="No model is loaded"):
            anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0).messages.count_tokens(model="m", messages=_user("hi"))


def test_sampling_fills_what_the_client_left_out_from_the_preset_of_the_thinking_mode():
    from mlx_backend.generation.sampling import NON_THINKING_PRESET, THINKING_PRESET
    from mlx_backend.server.anthropic_messages import parse_messages_request

    def sampling(**fields):
        return parse_messages_request({"max_tokens": 5, "messages": _user("hi"), **fields}, max_tokens_limit=100).request.sampling

    assert sampling() is None  # the engine's own preset
    thinking = sampling(temperature=0.2)
    assert (thinking.temperature, thinking.top_p, thinking.top_k) == (0.2, THINKING_PRESET.top_p, THINKING_PRESET.top_k)
    plain = sampling(top_k=5, thinking={"type": "disabled"})
    assert (plain.temperature, plain.top_p, plain.top_k) == (NON_THINKING_PRESET.temperature, NON_THINKING_PRESET.top_p, 5)


def test_effort_reaches_templates_that_take_it_and_only_those():
    from mlx_backend.server.anthropic_messages import parse_messages_request

    def effort(efforts, level):
        body = {"max_tokens": 5, "messages": _user("hi"), "output_config": {"effort": level}}
        return parse_messages_request(body, max_tokens_limit=100, reasoning_efforts=efforts).request.reasoning_effort

    assert effort(("xhigh", "medium", "low"), "low") == "low"
    assert effort(("xhigh", "medium", "low"), "max") is None
    assert effort((), "low") is None


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    from tests.support.hybrid_checkpoints import hybrid_fixtures_available

    if not hybrid_fixtures_available():
        pytest.skip("the shared Qwen3.5-family fixtures are missing")
    pytest.importorskip("torch")
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    return load(write_hybrid_checkpoint(tmp_path_factory.mktemp("anthropic-qwen35") / "Qwen3.5-tiny", kind="dense", release="qwen3.5"))


def test_a_qwen35_xml_tool_call_streams_as_tool_use_and_a_result_continues(qwen35):
    call = ("I should look it up.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n"
            "</parameter>\n</function>\n</tool_call>")
    thinking = {"type": "enabled", "budget_tokens": 1024}
    with _server(qwen35, [call, "Sunny, it seems."]) as (client, scripted, tokenizer):
        with client.messages.stream(model="m", max_tokens=120, thinking=thinking, tools=[WEATHER_TOOL], messages=_user("Weather in Paris?")) as stream:
            kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
            final = stream.get_final_message()
        assert "<tools>" in _prompt(scripted, tokenizer) and "get_weather" in _prompt(scripted, tokenizer)
        assert [b.type for b in final.content] == ["thinking", "tool_use"] and final.stop_reason == "tool_use"
        assert final.content[0].thinking == "I should look it up."
        assert final.content[1].name == "get_weather" and final.content[1].input == {"city": "Paris"}
        assert "input_json_delta" in kinds
        history = [
            *_user("Weather in Paris?"),
            {"role": "assistant", "content": [b.to_dict() for b in final.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": final.content[1].id, "content": "sunny, 21C"}]},
        ]
        follow = client.messages.create(model="m", max_tokens=120, thinking={"type": "disabled"}, tools=[WEATHER_TOOL], messages=history)
        prompt = _prompt(scripted, tokenizer)
    assert follow.content[-1].text == "Sunny, it seems." and follow.stop_reason == "end_turn"
    assert "sunny, 21C" in prompt and "<function=get_weather>" in prompt
