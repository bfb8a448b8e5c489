"""The engine's own prefill loop: chunks sized by time, prompt cancel within a chunk, ETA, and
tokens identical to a one-pass mlx-lm run however the prompt was chunked."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Optional

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step

from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, Finished, PrefillProgress, SamplingParams
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.prefill import PrefillPolicy
from mlx_backend.generation.sampling import make_request_logits_processors
from mlx_backend.loading.loader import load
from mlx_backend.models.limits import KV_GROUP_SIZE
from tests.support.checkpoints import write_random_checkpoint

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
SENTENCE = "Once upon a time in a quiet town by the sea there lived an old clockmaker. "
SECONDS_PER_TOKEN = 0.002  # a fixed 2,048-token chunk of the long prompt would take ~3 s


def ask(text: str, **fields) -> ChatRequest:
    fields.setdefault("sampling", GREEDY)
    fields.setdefault("max_tokens", 8)
    fields.setdefault("enable_thinking", False)
    return ChatRequest(messages=(ChatMessage("user", text),), **fields)


class SlowModel:
    """Makes every model call sleep in proportion to its tokens, like a big model on a slow machine."""

    def __init__(self, monkeypatch, model, seconds_per_token: float = SECONDS_PER_TOKEN):
        self.lengths: list[int] = []
        original = type(model).__call__
        calls = self

        def slow_call(self_, inputs, *args, **kwargs):
            calls.lengths.append(inputs.shape[1])
            time.sleep(seconds_per_token * inputs.shape[1])
            return original(self_, inputs, *args, **kwargs)

        monkeypatch.setattr(type(model), "__call__", slow_call)


def one_pass_tokens(
    model, prompt: list[int], max_tokens: int, eos: frozenset[int], kv_bits: Optional[int] = None,
    sampling: SamplingParams = GREEDY,
) -> list[int]:
    """Plain mlx-lm over the whole prompt in one prefill chunk, stopped at end of turn (kept)."""
    out = []
    for token, _ in generate_step(
        mx.array(prompt), model, max_tokens=max_tokens, prefill_step_size=len(prompt),
        kv_bits=kv_bits, kv_group_size=KV_GROUP_SIZE, quantized_kv_start=0,
        logits_processors=make_request_logits_processors(sampling),
    ):
        out.append(token)
        if token in eos:
            break
    return out


def generated_tokens(engine: Engine, conversation: str, prompt: list[int]) -> list[int]:
    held = engine.prompt_caches.tokens_of(conversation)
    assert held is not None and held[: len(prompt)] == prompt
    return held[len(prompt) :]


# ---------------------------------------------------------------- chunk sizing


def test_the_next_chunk_is_sized_to_the_target_time_within_the_bounds():
    policy = PrefillPolicy(target_chunk_s=0.25, first_chunk_tokens=32, min_chunk_tokens=16, max_chunk_tokens=4096)
    assert policy.next_chunk_tokens(100, 0.1) == 250  # 1,000 tokens/s for a quarter second
    assert policy.next_chunk_tokens(100, 1.0) == 25
    assert policy.next_chunk_tokens(100, 10.0) == 16  # floor
    assert policy.next_chunk_tokens(2000, 0.01) == 4096  # ceiling
    assert policy.next_chunk_tokens(32, 0.001) == 128  # one noisy small chunk can't jump far
    assert PrefillPolicy.fixed(7).next_chunk_tokens(7, 0.001) == 7
    with pytest.raises(ValueError):
        PrefillPolicy(first_chunk_tokens=8, min_chunk_tokens=16)


def test_chunks_adapt_toward_the_time_target_and_the_eta_comes_after_the_first_chunk(tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    target = 0.1
    engine = Engine(
        model, tokenizer, reencode_replies=False,
        prefill=PrefillPolicy(target_chunk_s=target, first_chunk_tokens=8, min_chunk_tokens=4, max_chunk_tokens=4096),
    )
    request = ask(SENTENCE * 12, max_tokens=2)
    prompt = engine.prepare(request).prompt
    calls = SlowModel(monkeypatch, model)
    progress = [e for e in engine.stream(request) if isinstance(e, PrefillProgress)]

    chunks = calls.lengths[: len(progress) - 2]  # the prefill chunks, before generate_step's calls
    assert sum(chunks) == len(prompt) - 1
    assert chunks[0] == 8
    assert chunks[1] > chunks[0]  # grown from the first measurement
    # At 2 ms a token a 0.1 s chunk is 50 tokens; the sleep dominates, real work only shrinks it.
    settled = chunks[3:-1]  # after the capped growth, without the remainder
    assert settled and all(20 <= size <= 50 for size in settled), chunks

    assert progress[0] == PrefillProgress(0, len(prompt), None)
    after_first_chunk = progress[1]
    assert after_first_chunk.done == 8
    assert after_first_chunk.eta_s is not None and after_first_chunk.eta_s > 0
    assert all(p.eta_s is not None for p in progress[1:])


# ---------------------------------------------------------------- cancel


def test_cancel_during_a_long_prefill_takes_effect_within_half_a_second(tiny_model, monkeypatch):
    model, tokenizer = tiny_model
    engine = Engine(model, tokenizer, reencode_replies=False)  # the default policy: ~0.25 s chunks
    request = ask(SENTENCE * 40, conversation_id="chat", max_tokens=6)
    prompt = engine.prepare(request).prompt
    assert len(prompt) * SECONDS_PER_TOKEN > 3  # one fixed 2,048-token chunk: seconds
    cancel = threading.Event()
    started = threading.Event()
    events: list[tuple[float, object]] = []

    def consume() -> None:
        for event in engine.stream(request, cancel):
            events.append((time.perf_counter(), event))
            started.set()

    with monkeypatch.context() as patch:
        SlowModel(patch, model)
        consumer = threading.Thread(target=consume)
        consumer.start()
        assert started.wait(10)
        time.sleep(0.6)  # well inside the prefill, most likely mid-chunk
        cancel.set()
        cancelled_at = time.perf_counter()
        consumer.join(10)
    finished_at, done = events[-1]
    assert isinstance(done, Finished) and done.reason == "cancelled"
    assert finished_at - cancelled_at < 0.5
    assert done.stats.generation_tokens == 0
    assert not any(isinstance(event, AnswerDelta) for _, event in events)

    # The cache kept the finished chunks; the next request matches a cold run.
    held = engine.prompt_caches.tokens_of("chat")
    assert 0 < len(held) < len(prompt) - 1 and held == prompt[: len(held)]
    again = list(engine.stream(request))
    assert again[-1].stats.cached_tokens == len(held)
    assert generated_tokens(engine, "chat", prompt) == one_pass_tokens(
        model, prompt, 6, tokenizer.eos_token_ids
    )


# ---------------------------------------------------------------- same tokens however chunked


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory):
    """Heads 64 wide, so the KV cache can be quantized in groups of 64."""
    return write_random_checkpoint(tmp_path_factory.mktemp("wide"), head_dim=64)


@pytest.mark.parametrize("kv_bits", [None, 8])
def test_small_chunks_give_the_tokens_of_a_one_pass_run_also_with_a_reused_cache(wide_checkpoint, kv_bits):
    model, tokenizer = load(wide_checkpoint)
    engine = Engine(model, tokenizer, prefill=PrefillPolicy.fixed(7), reencode_replies=False)
    eos = tokenizer.eos_token_ids
    first = ask(SENTENCE * 3, conversation_id="chat", kv_bits=kv_bits)
    prompt = engine.prepare(first).prompt
    reply = "".join(e.text for e in engine.stream(first) if isinstance(e, AnswerDelta))
    assert generated_tokens(engine, "chat", prompt) == one_pass_tokens(model, prompt, 8, eos, kv_bits)

    follow_up = replace(
        first,
        messages=(*first.messages, ChatMessage("assistant", reply), ChatMessage("user", SENTENCE * 2)),
    )
    events = list(engine.stream(follow_up))
    follow_prompt = engine.prepare(follow_up).prompt
    assert events[-1].stats.cached_tokens > 0
    assert generated_tokens(engine, "chat", follow_prompt) == one_pass_tokens(
        model, follow_prompt, 8, eos, kv_bits
    )


def test_the_presence_penalty_sees_the_whole_prompt_as_in_a_one_pass_run(tiny_model):
    model, tokenizer = tiny_model
    engine = Engine(model, tokenizer, prefill=PrefillPolicy.fixed(5), reencode_replies=False)
    penalized = replace(GREEDY, presence_penalty=2.0)
    request = ask(SENTENCE * 2, conversation_id="chat", sampling=penalized, max_tokens=12)
    prompt = engine.prepare(request).prompt
    list(engine.stream(request))
    tokens = generated_tokens(engine, "chat", prompt)
    eos = tokenizer.eos_token_ids
    assert tokens == one_pass_tokens(model, prompt, 12, eos, sampling=penalized)
    # The penalty changes this reply, so the check above really covers it.
    assert tokens != one_pass_tokens(model, prompt, 12, eos)
