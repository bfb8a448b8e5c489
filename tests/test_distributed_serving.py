"""``qwen-desk serve`` on a group of local ranks: the same answers as one process, for the
official openai client, and a client's disconnect cancels the request on every rank."""

from __future__ import annotations

import dataclasses
import time

import pytest

from mlx_backend.distributed.codec import (
    HEARTBEAT,
    REQUEST,
    STOP,
    decode_frame,
    encode_frame,
    request_from_json,
    request_to_json,
)
from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams, ToolCall
from tests.support.group_server import serve_group

openai = pytest.importorskip("openai")

FULL_REQUEST = ChatRequest(
    messages=(
        ChatMessage("system", "Be brief. <|im_end|> typed in"),
        ChatMessage("user", "Weather in Z\u00fcrich? \u4f60\u597d"),
        ChatMessage("assistant", "Let me look.", (ToolCall("weather", {"city": "Z\u00fcrich", "days": [1, 2]}, '{"name": "weather"}'),)),
        ChatMessage("tool", '{"temp": 21.5}'),
        ChatMessage("user", "And tomorrow?"),
    ),
    conversation_id="conv-42",
    enable_thinking=False,
    sampling=SamplingParams(temperature=0.7, top_p=0.8, top_k=20, min_p=0.05, presence_penalty=1.5),
    max_tokens=123,
    stop=("END", "\n\n"),
    seed=7,
    kv_bits=8,
    yarn_factor=2.0,
    reasoning_effort="low",
    preserve_thinking=True,
    tools=({"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},),
    raw_prompt=None,
    use_draft_model=False,
    use_mtp=False,
    prompt_lookup="off",
)


def test_the_codec_round_trips_every_request_field():
    defaults = ChatRequest((ChatMessage("user", "hi"),))
    # Every field of FULL_REQUEST differs from its default (raw_prompt aside: it excludes messages),
    # so a field the codec dropped would come back as the default and fail here.
    for field in dataclasses.fields(ChatRequest):
        if field.name != "raw_prompt":
            assert getattr(FULL_REQUEST, field.name) != getattr(defaults, field.name), field.name
    assert set(request_to_json(FULL_REQUEST)) == {field.name for field in dataclasses.fields(ChatRequest)}
    kind, back, error = decode_frame(encode_frame(REQUEST, FULL_REQUEST))
    assert (kind, error) == (REQUEST, None)
    assert back == FULL_REQUEST
    raw = ChatRequest((), raw_prompt="Once upon a time", sampling=None)
    assert request_from_json(request_to_json(raw)) == raw


def test_the_other_frames_carry_their_kind_and_error():
    assert decode_frame(encode_frame(HEARTBEAT)) == (HEARTBEAT, None, None)
    assert decode_frame(encode_frame(STOP, error="rank 1 could not load")) == (STOP, None, "rank 1 could not load")
    with pytest.raises(ValueError):
        decode_frame(b'{"kind": "surprise"}')


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    folder = tmp_path_factory.mktemp("served") / "model"
    # Three layers: two and three ranks each get whole layers (the group splits them by default).
    write_random_checkpoint(folder, tokenizer="qwen3", num_hidden_layers=3)
    return folder


QUESTION = [{"role": "user", "content": "Write a short poem about the sea."}]


def _answers(client) -> tuple[str, str]:
    whole = client.chat.completions.create(model="model", messages=QUESTION, max_tokens=24, temperature=0)
    stream = client.chat.completions.create(model="model", messages=QUESTION, max_tokens=24, temperature=0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    return whole.choices[0].message.content, streamed


@pytest.fixture(scope="module")
def single_process_answer(small_model):
    from mlx_backend import Engine
    from mlx_backend.server.app import create_app
    from mlx_backend.server.backend import EngineBackend
    from mlx_backend.server.settings import ServerSettings
    from tests.support.server import serving

    backend = EngineBackend(Engine.load(small_model), "model")
    try:
        with serving(create_app(backend, ServerSettings(port=0))) as url:
            return _answers(openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0))
    finally:
        backend.close()


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_group_answers_the_openai_client_as_one_process_does(small_model, single_process_answer, ranks):
    group = serve_group(ranks, small_model)
    try:
        client = openai.OpenAI(base_url=f"{group.url()}/v1", api_key="local", max_retries=0, timeout=120)
        whole, streamed = _answers(client)
        assert whole == single_process_answer[0] != ""
        assert streamed == single_process_answer[1] == whole
        # Every follower ran both requests to the same end as rank 0.
        ended = group.wait_for(lambda: len([r for r in group.reports() if "request" in r]) == 2 * (ranks - 1) or None, 30, "follower reports")
        assert ended
        for report in (r for r in group.reports() if "request" in r):
            assert (report["reason"], report["tokens"]) == ("length", 24)
        group.signal_group(2)  # SIGINT: rank 0 stops and tells the followers
        assert group.wait(60) == 0
        assert "Server stopped." in group.text()
        assert "exited with code" not in group.text()
    finally:
        group.close()


def test_a_client_that_disconnects_cancels_on_every_rank(small_model):
    group = serve_group(2, small_model)
    try:
        client = openai.OpenAI(base_url=f"{group.url()}/v1", api_key="local", max_retries=0, timeout=120)
        stream = client.chat.completions.create(
            model="model", messages=QUESTION, max_tokens=4000, temperature=0, stream=True
        )
        for number, _chunk in enumerate(stream):
            if number == 3:
                break
        stream.close()
        report = group.wait_for(lambda: next((r for r in group.reports() if "request" in r), None), 60, "the follower's end")
        assert report["rank"] == 1 and report["reason"] == "cancelled"
        assert 0 < report["tokens"] < 4000
        # The group is still fine: the next request is answered in full on both ranks.
        again = client.chat.completions.create(model="model", messages=QUESTION, max_tokens=8, temperature=0)
        assert again.choices[0].finish_reason == "length"
        time.sleep(1)
        assert [r["reason"] for r in group.reports() if "request" in r] == ["cancelled", "length"]
    finally:
        group.close()
