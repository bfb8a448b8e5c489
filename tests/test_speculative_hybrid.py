"""Speculative decoding on hybrid caches (Qwen3.5 dense and MoE, Qwen3-Next) against plain decoding.

A Gated DeltaNet layer's state can't be trimmed: the verify loop snapshots it before each pass
and restores it (feeding the kept tokens again) when drafts are rejected. Every check compares
with plain decoding of the same model, token by token, on random-weight checkpoints: a tiny
Qwen3.5 drafting one twice its depth (built to agree fully or in part), prompt lookup, the
prompt cache across turns, cancel, and the sampled distribution.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step

from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.prompt_cache import rewind, take_snapshot
from mlx_backend.generation.sampling import make_request_sampler
from mlx_backend.generation.speculative import (
    DraftModelDrafter,
    PromptLookupDrafter,
    SpeculationStats,
    can_speculate,
    speculative_steps,
)
from mlx_backend.loading.loader import load, load_model
from tests.support.draft_pairs import QuotingModel
from tests.support.speculation import GREEDY, request, answer, engines
from tests.support.hybrid_checkpoints import agree_with_hybrid, hybrid_fixtures_available, write_hybrid_checkpoint

pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPTS = (
    "hello there",
    "Tell me a story about a clock that runs backwards, please.",
    "List three colours and say why you like them.",
)
needs_fixtures = pytest.mark.skipif(not hybrid_fixtures_available(), reason="Qwen3.5-family fixtures missing")


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    """Qwen3.5 dense with the 248K tokenizer: a 4-layer draft and 8-layer targets built from it."""
    if not hybrid_fixtures_available():
        pytest.skip("Qwen3.5-family fixtures missing")
    root = tmp_path_factory.mktemp("hybrid-pair")
    draft_path = write_hybrid_checkpoint(root / "draft", "dense", seed=1)
    target_path = write_hybrid_checkpoint(root / "target", "dense", seed=2, num_hidden_layers=8)
    draft, draft_tokenizer = load(draft_path)
    same, tokenizer = load(target_path)
    agree_with_hybrid(same, draft)
    partial, _ = load(target_path)
    agree_with_hybrid(partial, draft, mix=0.6)
    own, _ = load(target_path)
    return dict(same=same, partial=partial, unrelated=own, draft=draft, tokenizer=tokenizer,
                draft_tokenizer=draft_tokenizer)






@needs_fixtures
@pytest.mark.parametrize("target", ["same", "partial", "unrelated"])
def test_greedy_hybrid_draft_model_is_token_identical_to_plain(qwen35, target):
    plain, spec = engines(qwen35, target)
    drafted = accepted = 0
    for text in PROMPTS:
        expected, plain_end = answer(plain, request(text))
        got, spec_end = answer(spec, request(text))
        assert got == expected
        assert spec_end.stats.generation_tokens == plain_end.stats.generation_tokens
        assert spec_end.stats.speculative == "draft-model"
        drafted += spec_end.stats.drafted_tokens
        accepted += spec_end.stats.accepted_tokens
    assert drafted > 0
    if target == "same":
        assert accepted == drafted
    else:
        assert accepted < drafted  # rejections happened: the restore path ran


@needs_fixtures
@pytest.mark.parametrize("kv_bits", [None, 8])
def test_hybrid_prompt_cache_across_turns_with_a_draft(qwen35, kv_bits):
    plain, spec = engines(qwen35, "partial")
    history: list[ChatMessage] = []
    for turn, text in enumerate(PROMPTS):
        history.append(ChatMessage("user", text))
        req = ChatRequest(messages=tuple(history), enable_thinking=False, sampling=GREEDY,
                          max_tokens=24, kv_bits=kv_bits, conversation_id="c1")
        expected, _ = answer(plain, replace(req, conversation_id=None))  # cold
        got, finished = answer(spec, req)
        assert got == expected
        assert finished.stats.speculative == "draft-model"
        if turn:
            assert finished.stats.cached_tokens > 0
        entry = spec.prompt_caches.peek("c1")
        assert entry is not None and all(layer.offset == len(entry.tokens) for layer in entry.layers)
        draft_entry = spec._draft_caches.peek("c1")
        assert draft_entry is not None
        assert all(layer.offset == len(draft_entry.tokens) for layer in draft_entry.layers)
        history.append(ChatMessage("assistant", got))


@needs_fixtures
def test_hybrid_cancel_mid_answer_leaves_a_cache_that_continues_identically(qwen35):
    plain, spec = engines(qwen35, "partial")
    req = request(PROMPTS[1], max_tokens=60, conversation_id="c")
    _, finished = answer(spec, req, cancel_after=3)
    assert finished.reason == "cancelled"
    entry = spec.prompt_caches.peek("c")
    assert entry is not None
    assert all(layer.offset == len(entry.tokens) for layer in entry.layers)
    assert len(entry.tokens) == len(spec.prepare(req).prompt) + finished.stats.generation_tokens
    # The layers hold exactly those tokens: one more step gives a fresh prefill's logits.
    model = qwen35["partial"]
    fresh = model.make_cache()
    model(mx.array(entry.tokens[:-1])[None], cache=fresh)
    probe = mx.array(entry.tokens[-1:])[None]
    reference = model(probe, cache=fresh)[0, -1]
    layers = list(entry.layers)
    snapshot = [layer.snapshot() if hasattr(layer, "snapshot") else None for layer in layers]
    # (the cache holds the last token already: compare the next position's logits instead)
    nxt = mx.argmax(reference).reshape(1, 1)
    ref_next = model(nxt, cache=fresh)[0, -1]
    got_next = model(nxt, cache=layers)[0, -1]
    assert mx.allclose(ref_next, got_next, atol=1e-4).item()
    for layer, state in zip(layers, snapshot):  # put the entry back as it was
        if state is None:
            layer.trim(1)
        else:
            layer.restore(state)
    # The app's next turn (the partial reply, a new message) answers as a cold plain run does.
    text, _ = answer(plain, replace(req, conversation_id=None, max_tokens=finished.stats.generation_tokens))
    follow = ChatRequest(
        messages=(ChatMessage("user", PROMPTS[1]), ChatMessage("assistant", text), ChatMessage("user", PROMPTS[2])),
        enable_thinking=False, sampling=GREEDY, max_tokens=40, conversation_id="c",
    )
    got, follow_end = answer(spec, follow)
    assert got == answer(plain, replace(follow, conversation_id=None))[0]
    assert follow_end.stats.cached_tokens > 0


DOCUMENT = (
    "The lighthouse keeper kept a logbook of every ship that passed the rocks at night. "
    "In the winter of the great storm he wrote that the lamp burned for nine days without rest, "
    "and that the fishermen of the harbour brought him bread and oil in small boats. "
) * 4


@needs_fixtures
def test_hybrid_prompt_lookup_accepts_quotes_and_matches_plain(qwen35):
    tokenizer = qwen35["tokenizer"]
    quote = "the lamp burned for nine days without rest, and that the fishermen of the harbour brought him bread"
    model = QuotingModel(qwen35["unrelated"], tokenizer.encode(quote), tokenizer.token_to_id("<|im_end|>"))
    engine = Engine(model, tokenizer, prompt_lookup_min_tokens=100)
    req = request(f"{DOCUMENT}\n\nWhat did the keeper write about the storm?", max_tokens=80, prompt_lookup="on")
    model.prompt_length = len(engine.prepare(req).prompt)
    expected, plain_end = answer(engine, replace(req, prompt_lookup="off"))
    assert expected == quote and plain_end.stats.speculative is None
    got, finished = answer(engine, req)
    assert got == expected
    assert finished.stats.speculative == "prompt-lookup"
    assert finished.stats.accepted_tokens >= 10


@needs_fixtures
def test_hybrid_prompt_lookup_with_rejections_matches_plain(qwen35):
    """A random model quotes nothing: lookups are mostly rejected, output still plain's."""
    engine = Engine(qwen35["unrelated"], qwen35["tokenizer"])
    req = request(f"{DOCUMENT}\n\nRepeat the story.", max_tokens=48)
    expected, _ = answer(engine, replace(req, prompt_lookup="off"))
    got, finished = answer(engine, replace(req, prompt_lookup="on"))
    assert got == expected
    assert finished.stats.speculative == "prompt-lookup"


# ------------------------------------------------------------------ loop level, all three kinds


def _plain_tokens(model, prompt, n):
    layers = model.make_cache()
    out = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=n, sampler=lambda x: mx.argmax(x, -1),
                                  prompt_cache=layers):
        out.append(token)
    return out


@pytest.mark.parametrize("kind", ["dense", "moe", "next"])
def test_verify_loop_restores_linear_state_for_every_hybrid_kind(tmp_path, kind):
    """Prompt lookup over a repetitive prompt (drafts accepted and rejected) against
    generate_step, greedy, on 512-id random checkpoints of each kind; and the cache after an
    early stop holds exactly the tokens handed out (it continues like a fresh prefill)."""
    model = load_model(write_hybrid_checkpoint(tmp_path / kind, kind, tokenizer=False, seed=3))
    assert can_speculate(model.make_cache())
    prompt = [5, 9, 17, 33, 5, 9, 17, 33, 5, 9, 17, 40, 41, 5, 9] * 3
    expected = _plain_tokens(model, prompt, 30)
    layers = model.make_cache()
    model(mx.array(prompt[:-1])[None], cache=layers)
    stats = SpeculationStats("prompt-lookup")
    steps = speculative_steps(model, layers, prompt, PromptLookupDrafter(), sampler=lambda x: mx.argmax(x, -1),
                              max_tokens=30, stats=stats, num_draft=4, calibration_steps=-1)
    got = [token for token, _ in steps]
    assert got == expected
    assert stats.drafted > 0
    # Stop early, mid-run: the cache holds prompt + the tokens taken, as a fresh prefill would.
    layers = model.make_cache()
    model(mx.array(prompt[:-1])[None], cache=layers)
    steps = speculative_steps(model, layers, prompt, PromptLookupDrafter(), sampler=lambda x: mx.argmax(x, -1),
                              max_tokens=30, stats=SpeculationStats("prompt-lookup"), num_draft=4,
                              calibration_steps=-1)
    taken = [next(steps)[0] for _ in range(7)]
    steps.close()
    assert all(layer.offset == len(prompt) + 7 for layer in layers)
    fresh = model.make_cache()
    model(mx.array(prompt + taken)[None], cache=fresh)
    nxt = mx.argmax(model(mx.array([expected[7]])[None], cache=layers)[0, -1])
    ref = mx.argmax(model(mx.array([expected[7]])[None], cache=fresh)[0, -1])
    assert taken == expected[:7] and nxt.item() == ref.item()


# ------------------------------------------------------------------ sampling


def _first_tokens(steps, n):
    out = []
    for token, _ in steps:
        out.append(token)
        if len(out) == n:
            break
    steps.close()
    return tuple(out)


def _tv(a: Counter, b: Counter) -> float:
    ta, tb = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / ta - b[k] / tb) for k in set(a) | set(b))


@needs_fixtures
def test_hybrid_sampled_tokens_follow_the_target_distribution(qwen35):
    """First two sampled tokens (top-3 each) over many seeds: speculative with the hybrid draft
    (restoring the linear state on every rejection) against plain generate_step, and another
    model's sampling as a control that the check can tell distributions apart. The draft is
    greedy and the target samples from its top 3: drafts are accepted only part of the time."""
    target, draft, tokenizer = qwen35["same"], qwen35["draft"], qwen35["tokenizer"]
    params = SamplingParams(temperature=1.5, top_p=1.0, top_k=3)
    prompt = tokenizer.encode("Once upon a time")
    seeds = range(300)

    def prefilled(model):
        layers = model.make_cache()
        model(mx.array(prompt[:-1])[None], cache=layers)
        mx.eval([c.state for c in layers])
        return layers, {len(prompt) - 1: take_snapshot(layers)}

    def rewound(layers, marks):  # one prefill for all seeds: back to the prompt after each run
        rewind(layers, layers[0].offset, marks, len(prompt) - 1)
        return layers

    def plain(model):
        layers, marks = prefilled(model)
        counts = Counter()
        for seed in seeds:
            mx.random.seed(seed)
            counts[_first_tokens(generate_step(
                mx.array(prompt[-1:]), model, sampler=make_request_sampler(params, 10**6),
                prompt_cache=rewound(layers, dict(marks)), max_tokens=2), 2)] += 1
        return counts

    def speculative():
        layers, marks = prefilled(target)
        drafter = DraftModelDrafter(draft, draft.make_cache(), [])
        stats = SpeculationStats(drafter.kind)
        counts = Counter()
        for seed in seeds:
            mx.random.seed(seed)
            steps = speculative_steps(
                target, rewound(layers, dict(marks)), prompt, drafter,
                sampler=make_request_sampler(params, 10**6), max_tokens=2,
                stats=stats, num_draft=1, calibration_steps=-1,
            )
            counts[_first_tokens(steps, 2)] += 1
        assert 0 < stats.accepted < stats.drafted
        return counts

    reference, ours, control = plain(target), speculative(), plain(qwen35["unrelated"])
    assert _tv(reference, control) > 0.3
    assert _tv(reference, ours) < 0.15
