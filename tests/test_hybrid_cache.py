"""The multi-turn prompt cache of hybrid models (Qwen3.5, Qwen3-Next): snapshots of the linear
layers' state at turn boundaries, resumed from on the next turn.

Each engine test runs on a tiny random Qwen3.5-shaped checkpoint written by transformers (3
Gated DeltaNet layers + 1 full-attention layer, the real 248K tokenizer and Qwen3.5 template)
and compares every warm turn with a cold run of the same prompt on a fresh engine: seeded
sampling makes both deterministic, so equal tokens mean the reused state is the right one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, Finished, PrefillProgress, SamplingParams
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.prefill import PrefillPolicy, prefill
from mlx_backend.generation.prompt_cache import (
    PromptCacheStore,
    common_prefix_length,
    is_restorable,
    rewind,
    take_snapshot,
)
from mlx_backend.loading.loader import load
from mlx_backend.models.linear_state import LinearStateCache
from tests.support.hybrid_checkpoints import hybrid_fixtures_available, write_hybrid_checkpoint

pytestmark = pytest.mark.skipif(
    not hybrid_fixtures_available(), reason="the shared Qwen3.5-family fixtures are missing"
)

SEEDED = SamplingParams(temperature=0.6, top_p=0.95, top_k=20)
STORY = (
    "Once upon a time in a quiet town by the sea there lived an old clockmaker who repaired "
    "every clock in the valley. Tell me what happened one winter morning."
)
FOLLOW_UPS = ["Why was it winter?", "And then what did he do?", "How does the story end?"]
SECONDS_PER_TOKEN = 0.002


def with_long_memory(loaded):
    """Make the linear layers' recurrent state decay slowly, as a trained model's can.

    The random A_log (uniform in [-1, 1]) forgets most of the state within a few tokens, so a
    wrong state at a turn boundary would hardly show a message later; with A_log = -5 a token's
    trace lasts hundreds of tokens and any wrongly resumed state shows in the logits.
    """
    model, tokenizer = loaded
    layers = [module for _, module in model.named_modules() if "A_log" in module]
    assert layers
    for module in layers:
        module["A_log"] = mx.full(module["A_log"].shape, -5.0, dtype=module["A_log"].dtype)
    return model, tokenizer


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    pytest.importorskip("torch")
    folder = write_hybrid_checkpoint(tmp_path_factory.mktemp("qwen35"), kind="dense", tokenizer=True, release="qwen3.5")
    return with_long_memory(load(folder))


@pytest.fixture(scope="module")
def qwen3_next(tmp_path_factory):
    pytest.importorskip("torch")
    return with_long_memory(load(write_hybrid_checkpoint(tmp_path_factory.mktemp("next"), kind="next", tokenizer=True)))


class Decoded:
    """What one request decoded: the tokens generate_step handed over and their log-probabilities."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.logprobs: list[mx.array] = []

    def __eq__(self, cold: object) -> bool:
        """Same tokens, from the same distributions: a wrong state shows in the logits even
        where a sampled token happens to survive it."""
        assert isinstance(cold, Decoded)
        return self.tokens == cold.tokens and all(
            mx.allclose(warm, reference, atol=1e-4).item() for warm, reference in zip(self.logprobs, cold.logprobs)
        )

    def __repr__(self) -> str:
        return f"Decoded({self.tokens})"


@pytest.fixture
def decoded(monkeypatch) -> list[Decoded]:
    """What each request decoded, one entry per run."""
    runs: list[Decoded] = []
    original = Engine._start_decoding

    def spy(self, prepared, run):
        record = Decoded()
        runs.append(record)
        for item in original(self, prepared, run):
            record.tokens.append(item[0])
            record.logprobs.append(item[1])
            yield item

    monkeypatch.setattr(Engine, "_start_decoding", spy)
    return runs


class ModelCalls:
    """Counts the token positions the model runs on, optionally sleeping for each (a slow model)."""

    def __init__(self, monkeypatch, model, seconds_per_token: float = 0.0):
        self.lengths: list[int] = []
        original = type(model).__call__
        calls = self

        def counting_call(self_, inputs, *args, **kwargs):
            calls.lengths.append(inputs.shape[1])
            if seconds_per_token:
                time.sleep(seconds_per_token * inputs.shape[1])
            return original(self_, inputs, *args, **kwargs)

        monkeypatch.setattr(type(model), "__call__", counting_call)

    @property
    def positions(self) -> int:
        return sum(self.lengths)


def ask(messages, **fields) -> ChatRequest:
    fields.setdefault("sampling", SEEDED)
    fields.setdefault("seed", 7)
    fields.setdefault("max_tokens", 10)
    fields.setdefault("conversation_id", "chat")
    return ChatRequest(messages=tuple(messages), **fields)


def answer_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerDelta))


def finished(events) -> Finished:
    assert isinstance(events[-1], Finished)
    return events[-1]


def engine_for(loaded, **options) -> Engine:
    model, tokenizer = loaded
    return Engine(model, tokenizer, prefill=PrefillPolicy.fixed(16), **options)


def cold_tokens(loaded, request: ChatRequest, decoded) -> Decoded:
    """The tokens a fresh engine decodes for ``request`` from an empty cache."""
    runs = len(decoded)
    events = list(engine_for(loaded).stream(replace(request, conversation_id=None)))
    assert finished(events).stats.cached_tokens == 0 and len(decoded) == runs + 1
    return decoded[-1]


def generation_prompt(thinking: bool) -> str:
    # The Qwen3.5 template's generation prompt, as written in it.
    return "<|im_start|>assistant\n" + ("<think>\n" if thinking else "<think>\n\n</think>\n\n")


# ---------------------------------------------------------------- the store, without a model


def linear_layer(offset: int, seed: int) -> LinearStateCache:
    layer = LinearStateCache()
    layer[0] = mx.random.normal((1, 3, 8), key=mx.random.key(seed))
    layer[1] = mx.random.normal((1, 2, 4, 4), key=mx.random.key(seed + 1))
    layer.offset = offset
    return layer


def hybrid_layers(n_tokens: int, seed: int = 0) -> list:
    """A linear layer and an attention layer holding ``n_tokens`` positions."""
    attention = KVCache()
    keys = mx.arange(n_tokens * 8, dtype=mx.float32).reshape(1, 1, n_tokens, 8)
    attention.update_and_fetch(keys, keys + 1)
    return [linear_layer(n_tokens, seed), attention]


def advance(layers: list, tokens: int, seed: int) -> None:
    """What a model call over ``tokens`` positions does to the layers: new state arrays."""
    linear, attention = layers
    new = linear_layer(linear.offset + tokens, seed)
    linear.cache, linear.offset = new.cache, new.offset
    keys = mx.ones((1, 1, tokens, 8))
    attention.update_and_fetch(keys, keys)


def test_a_hybrid_cache_is_restorable_and_a_plain_one_is_not():
    assert is_restorable(hybrid_layers(2))
    assert not is_restorable([KVCache(), KVCache()])  # trimmable: trimmed, not restored
    assert is_restorable([LinearStateCache()])


def test_rewind_restores_the_longest_snapshot_inside_the_target_and_drops_later_ones():
    layers = hybrid_layers(4, seed=1)
    snapshots = {4: take_snapshot(layers)}
    at_four = [a for a in layers[0].cache]
    advance(layers, 3, seed=2)
    snapshots[7] = take_snapshot(layers)
    advance(layers, 5, seed=3)  # holds 12 positions now

    assert rewind(layers, 12, snapshots, 12) == 12  # the live state is used as is
    assert layers[0].offset == 12 and set(snapshots) == {4, 7}
    assert rewind(layers, 12, snapshots, 6) == 4
    assert all(a is b for a, b in zip(layers[0].cache, at_four)) and layers[0].offset == 4 and layers[1].offset == 4
    assert set(snapshots) == {4}  # position 7's tokens are about to be replaced
    # Nothing to go back to: None, and the layers are left alone.
    assert rewind(layers, 4, snapshots, 3) is None
    assert layers[0].offset == 4 and layers[1].offset == 4


def test_checkout_resumes_a_hybrid_cache_from_its_live_state_or_the_best_snapshot():
    store = PromptCacheStore(byte_budget=10**9)
    layers = hybrid_layers(5)
    snapshots = {3: take_snapshot(hybrid_layers(3, seed=9))}
    store.put("chat", layers, [1, 2, 3, 4, 5], snapshots=snapshots)
    live = store.checkout("chat", [1, 2, 3, 4, 5, 6], lambda: hybrid_layers(0))
    assert live.reused == 5 and live.layers == layers
    assert set(live.snapshots) == {3}
    store.put("chat", live.layers, [1, 2, 3, 4, 5], snapshots=live.snapshots)

    edited = store.checkout("chat", [1, 2, 3, 4, 9, 9], lambda: hybrid_layers(0))
    assert edited.reused == 3 and [layer.offset for layer in edited.layers] == [3, 3]
    store.put("chat", edited.layers, [1, 2, 3], snapshots=edited.snapshots)
    # A prefix shorter than every snapshot: a fresh cache.
    fresh = store.checkout("chat", [1, 2, 8], lambda: hybrid_layers(0))
    assert fresh.reused == 0 and fresh.snapshots == {}


def test_put_refuses_snapshots_beyond_the_tokens_held():
    store = PromptCacheStore(byte_budget=10**9)
    layers = hybrid_layers(3)
    with pytest.raises(ValueError, match="snapshot lies outside"):
        store.put("chat", layers, [1, 2, 3], snapshots={4: take_snapshot(layers)})


def live_bytes(layers) -> int:
    return sum(layer.nbytes for layer in layers)


def test_snapshots_count_toward_the_byte_budget_once_per_array():
    store = PromptCacheStore(byte_budget=10**9)
    layers = hybrid_layers(4)
    snapshots = {4: take_snapshot(layers)}  # shares its arrays with the live state
    store.put("a", layers, [1, 2, 3, 4], snapshots=dict(snapshots))
    assert store.nbytes == live_bytes(layers)

    layers = store.checkout("a", [1, 2, 3, 4, 5, 6, 7], lambda: hybrid_layers(0)).layers
    advance(layers, 3, seed=4)
    store.put("a", layers, [1, 2, 3, 4, 5, 6, 7], snapshots=snapshots)
    snapshot_bytes = snapshots[4][0].nbytes
    assert snapshot_bytes > 0
    assert store.nbytes == live_bytes(layers) + snapshot_bytes


def test_eviction_drops_older_conversations_then_the_current_ones_oldest_snapshots():
    def entry(seed: int):
        layers = hybrid_layers(2, seed)
        snapshots = {1: take_snapshot(hybrid_layers(1, seed + 10))}
        advance(layers, 2, seed + 20)
        snapshots[2] = take_snapshot(hybrid_layers(2, seed + 30))
        return layers, snapshots

    layers, snapshots = entry(0)
    whole = PromptCacheStore(10**9)
    whole.put("probe", layers, [1, 2, 3, 4], snapshots=snapshots)
    full, live = whole.nbytes, live_bytes(layers)
    one_snapshot = snapshots[1][0].nbytes
    assert full == live + 2 * one_snapshot

    def put(store: PromptCacheStore, name: str, seed: int) -> None:
        layers, snapshots = entry(seed)
        store.put(name, layers, [1, 2, 3, 4], snapshots=snapshots)

    store = PromptCacheStore(byte_budget=full + one_snapshot)
    put(store, "a", 0)
    put(store, "b", 1)
    assert store.conversations() == ["b"]  # two don't fit: the older conversation goes
    assert set(store.peek("b").snapshots) == {1, 2}

    tight = PromptCacheStore(byte_budget=live + one_snapshot)
    put(tight, "a", 2)
    assert tight.conversations() == ["a"]  # kept alone, but its oldest snapshot went
    assert set(tight.peek("a").snapshots) == {2} and tight.nbytes <= tight.byte_budget

    capped = PromptCacheStore(byte_budget=10**9, max_snapshots=1)
    put(capped, "a", 3)
    assert set(capped.peek("a").snapshots) == {2}  # the latest turn's snapshot is kept


# ---------------------------------------------------------------- prefill stops


def test_prefill_ends_a_chunk_at_every_stop_and_is_unchanged_without(qwen35, monkeypatch):
    model, _ = qwen35
    tokens = list(range(100, 160))
    calls = ModelCalls(monkeypatch, model)
    chunks = [c.tokens for c in prefill(model, model.make_cache(), tokens, PrefillPolicy.fixed(16), threading.Event())]
    assert calls.lengths == [16, 16, 16, 12] and sum(chunks, []) == tokens
    calls.lengths.clear()
    stopped = list(prefill(model, model.make_cache(), tokens, PrefillPolicy.fixed(16), threading.Event(), stops=[5, 40, 60]))
    assert calls.lengths == [5, 16, 16, 3, 16, 4]
    assert [chunk.done for chunk in stopped] == [5, 21, 37, 40, 56, 60]


# ---------------------------------------------------------------- the engine


def test_turn_boundaries_are_where_the_rendered_history_ends(qwen35):
    engine = engine_for(qwen35)
    renderer = engine._renderer
    messages = [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", STORY),
        ChatMessage("assistant", "He fixed a watch."),
        ChatMessage("user", "Then? Typed <|im_start|> stays text."),
    ]
    for thinking in (True, False):
        prompt = renderer.render(messages, add_generation_prompt=True, thinking=thinking)
        before_user, before_reply = engine._turn_boundaries(prompt)
        history = renderer.render(messages, add_generation_prompt=False, thinking=thinking)
        assert prompt[: len(history)] == history and before_reply == len(history)
        assert engine.tokenizer.decode(prompt[before_user:before_reply]).startswith("<|im_start|>user\nThen?")


@pytest.mark.parametrize("thinking", [False, True])
def test_each_follow_up_prefills_only_the_new_message_and_matches_a_cold_run(qwen35, decoded, monkeypatch, thinking):
    engine = engine_for(qwen35)
    tokenizer = engine.tokenizer
    history = [ChatMessage("user", STORY)]
    prefilled = []
    for turn in range(4):
        request = ask(history, enable_thinking=thinking)
        prompt = engine.prepare(request).prompt
        before = engine.prompt_caches.tokens_of("chat")
        runs = len(decoded)
        events = []
        with monkeypatch.context() as patch:
            calls = ModelCalls(patch, engine.model)
            for event in engine.stream(request):
                events.append(event)
                if isinstance(event, Finished):
                    positions_at_finish = calls.positions
        assert len(decoded) == runs + 1
        warm = decoded[-1]
        stats = finished(events).stats
        prefilled.append(stats.prompt_tokens - stats.cached_tokens)
        assert events[0] == PrefillProgress(0, stats.prompt_tokens - stats.cached_tokens, None)
        if turn == 0:
            assert stats.cached_tokens == 0
        else:
            # The whole previous cache is reused: the new message and the generation prompt
            # are all that runs through the model before the answer.
            assert stats.cached_tokens == len(before) > 0 and prompt[: len(before)] == before
            new = tokenizer.decode(prompt[stats.cached_tokens :])
            assert new == f"<|im_start|>user\n{history[-1].content}<|im_end|>\n" + generation_prompt(thinking)
        assert positions_at_finish == stats.prompt_tokens - stats.cached_tokens + stats.generation_tokens
        assert warm == cold_tokens(qwen35, request, decoded)
        assert len(warm.tokens) == stats.generation_tokens > 0

        # Snapshots at this turn's boundaries and the end of the re-encoded reply, all valid.
        entry = engine.prompt_caches.peek("chat")
        held = len(entry.tokens)
        boundaries = engine._turn_boundaries(prompt)
        assert set(boundaries) - {0} <= set(entry.snapshots) and held in entry.snapshots
        for position, snapshot in entry.snapshots.items():
            assert position <= held
            assert all(state is None or state.offset == position for state in snapshot)
        # The budget sees every snapshot; the one at the live position shares its arrays.
        assert entry.nbytes == snapshot_bytes(entry, besides=held) + sum(layer.nbytes for layer in entry.layers)
        history += [ChatMessage("assistant", answer_of(events)), ChatMessage("user", FOLLOW_UPS[turn % 3])]
    # Before snapshots a hybrid model re-prefilled the whole prompt every turn.
    assert all(count < 30 for count in prefilled[1:]), prefilled


def snapshot_bytes(entry, besides: Optional[int] = None) -> int:
    return sum(
        state.nbytes
        for position, snapshot in entry.snapshots.items()
        if position != besides
        for state in snapshot
        if state is not None
    )


def test_the_engine_budget_evicts_other_chats_then_the_oldest_snapshots_and_reuse_survives(qwen35, decoded):
    def chat(engine: Engine, conversation: str, turns: int) -> list[ChatMessage]:
        history = [ChatMessage("user", STORY)]
        for turn in range(turns):
            events = list(engine.stream(ask(history, enable_thinking=False, conversation_id=conversation)))
            history += [ChatMessage("assistant", answer_of(events)), ChatMessage("user", FOLLOW_UPS[turn])]
        return history

    roomy = engine_for(qwen35)
    chat(roomy, "a", 2)
    entry = roomy.prompt_caches.peek("a")
    full = entry.nbytes
    assert len(entry.snapshots) >= 3 and snapshot_bytes(entry, besides=len(entry.tokens)) > 0

    # Room for one chat: a second evicts the first.
    one_chat = engine_for(qwen35, cache_budget_bytes=full + full // 4)
    chat(one_chat, "a", 2)
    chat(one_chat, "b", 2)
    assert one_chat.prompt_caches.conversations() == ["b"]

    # Less than one chat: it stays, without its oldest snapshots, and still resumes.
    tight = engine_for(qwen35, cache_budget_bytes=full - 1)
    history = chat(tight, "a", 2)
    kept = tight.prompt_caches.peek("a")
    assert kept.nbytes <= full - 1 and set(kept.snapshots) < set(entry.snapshots)
    assert min(entry.snapshots) not in kept.snapshots
    request = ask(history, enable_thinking=False, conversation_id="a")
    before = tight.prompt_caches.tokens_of("a")
    assert finished(list(tight.stream(request))).stats.cached_tokens == len(before)
    assert decoded[-1] == cold_tokens(qwen35, request, decoded)


@pytest.mark.parametrize("kv_bits", [None, 8])
def test_regenerating_or_editing_a_turn_resumes_from_the_snapshot_before_it(qwen35, decoded, kv_bits):
    engine = engine_for(qwen35)
    history = [ChatMessage("user", STORY)]
    for follow_up in FOLLOW_UPS[:2]:
        events = list(engine.stream(ask(history, enable_thinking=False, kv_bits=kv_bits)))
        history += [ChatMessage("assistant", answer_of(events)), ChatMessage("user", follow_up)]
    last = ask(history, enable_thinking=False, kv_bits=kv_bits)
    list(engine.stream(last))
    kinds = {type(layer) for layer in engine.prompt_caches.peek("chat").layers}
    assert (QuantizedKVCache in kinds) == (kv_bits is not None) and LinearStateCache in kinds

    def check(request: ChatRequest, expected_reuse: int) -> None:
        prompt = engine.prepare(request).prompt
        snapshots = set(engine.prompt_caches.peek("chat").snapshots)
        assert expected_reuse in snapshots
        common = common_prefix_length(engine.prompt_caches.tokens_of("chat"), prompt)
        assert expected_reuse == max(p for p in snapshots if p <= common) < common
        stats = finished(list(engine.stream(request))).stats
        assert stats.cached_tokens == expected_reuse
        assert decoded[-1] == cold_tokens(qwen35, request, decoded)

    prompt = engine.prepare(last).prompt
    before_user, before_reply = engine._turn_boundaries(prompt)
    # The same messages again (regenerate): only the generation prompt is prefilled.
    check(last, before_reply)
    # The last message edited: everything before it is reused.
    edited_last = ask([*history[:-1], ChatMessage("user", "What about his apprentice?")], enable_thinking=False, kv_bits=kv_bits)
    check(edited_last, before_user)
    # An earlier message edited: back to the last boundary before the edit.
    earlier = engine.prepare(ask(history[:3], enable_thinking=False)).prompt
    edited_earlier = ask([*history[:2], ChatMessage("user", "Why was it autumn?")], enable_thinking=False, kv_bits=kv_bits)
    check(edited_earlier, engine._turn_boundaries(earlier)[0])


def test_cancel_mid_prefill_leaves_a_consistent_cache_and_the_next_request_equals_cold(qwen35, decoded, monkeypatch):
    model, tokenizer = qwen35
    engine = Engine(
        model, tokenizer,
        prefill=PrefillPolicy(target_chunk_s=0.05, first_chunk_tokens=8, min_chunk_tokens=4, max_chunk_tokens=64),
    )
    first = ask([ChatMessage("user", STORY)], enable_thinking=False)
    events = list(engine.stream(first))
    history = [ChatMessage("user", STORY), ChatMessage("assistant", answer_of(events)), ChatMessage("user", STORY * 20)]
    request = ask(history, enable_thinking=False)
    prompt = engine.prepare(request).prompt
    before = engine.prompt_caches.tokens_of("chat")
    assert (len(prompt) - len(before)) * SECONDS_PER_TOKEN > 1
    cancel = threading.Event()
    seen = threading.Event()
    ended: list[Finished] = []

    def consume() -> None:
        for event in engine.stream(request, cancel):
            seen.set()
            if isinstance(event, Finished):
                ended.append(event)

    with monkeypatch.context() as patch:
        ModelCalls(patch, model, SECONDS_PER_TOKEN)
        consumer = threading.Thread(target=consume)
        consumer.start()
        assert seen.wait(10)
        time.sleep(0.4)
        cancel.set()
        consumer.join(10)
    assert ended and ended[0].reason == "cancelled" and ended[0].stats.generation_tokens == 0

    entry = engine.prompt_caches.peek("chat")
    held = entry.tokens
    assert len(before) < len(held) < len(prompt) - 1 and held == prompt[: len(held)]
    assert all(layer.offset == len(held) for layer in entry.layers)
    assert all(position <= len(held) for position in entry.snapshots)
    again = finished(list(engine.stream(request))).stats
    assert again.cached_tokens == len(held)
    assert decoded[-1] == cold_tokens(qwen35, request, decoded)


def test_a_qwen3_next_model_reuses_its_cache_across_turns_too(qwen3_next, decoded):
    engine = engine_for(qwen3_next)
    history = [ChatMessage("user", STORY)]
    for turn in range(3):
        request = ask(history, enable_thinking=False)
        before = engine.prompt_caches.tokens_of("chat")
        events = list(engine.stream(request))
        stats = finished(events).stats
        assert stats.cached_tokens == (len(before) if before else 0)
        assert decoded[-1] == cold_tokens(qwen3_next, request, decoded)
        history += [ChatMessage("assistant", answer_of(events)), ChatMessage("user", FOLLOW_UPS[turn])]
