"""Speculative decoding (draft model, prompt lookup) against plain decoding, on tiny models.

The high-acceptance pair is a target built from its draft plus layers with zero output
projections (tests/support/draft_pairs.py): identical predictions. A target with a blended head
agrees only in part, and an unrelated random draft hardly ever: those exercise rejection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import pytest
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from mlx_backend.errors import RequestError
from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.sampling import make_request_sampler
from mlx_backend.generation.speculative import (
    DraftModelDrafter,
    PromptLookupDrafter,
    SpeculationStats,
    speculative_steps,
)
from mlx_backend.loading.loader import load
from tests.support.draft_pairs import QuotingModel, agree_with, write_pair
from tests.support.speculation import GREEDY, request, answer, engines

# head_dim 64 so the KV cache can be quantized (groups of 64).
SHAPE = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64, intermediate_size=256)
PROMPTS = (
    "hello there",
    "Tell me a story about a clock that runs backwards, please.",
    "List three colours and say why you like them.",
)


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"), **SHAPE)


@pytest.fixture(scope="module")
def models(paths):
    """(target agreeing with the draft, a target agreeing in part, its random self, draft, tokenizers)."""
    draft_path, target_path = paths
    draft, draft_tokenizer = load(draft_path)
    same, tokenizer = load(target_path)
    agree_with(same, draft)
    partial, _ = load(target_path)
    agree_with(partial, draft, mix=0.6)
    unrelated, _ = load(target_path)
    return dict(
        same=same, partial=partial, unrelated=unrelated, draft=draft,
        tokenizer=tokenizer, draft_tokenizer=draft_tokenizer,
    )






@pytest.mark.parametrize("target", ["same", "partial", "unrelated"])
def test_greedy_draft_model_is_token_identical_to_plain(models, target):
    plain, spec = engines(models, target)
    for text in PROMPTS:
        expected, plain_end = answer(plain, request(text))
        got, spec_end = answer(spec, request(text))
        assert got == expected
        assert spec_end.stats.generation_tokens == plain_end.stats.generation_tokens
        assert spec_end.stats.speculative == "draft-model"
        assert spec_end.stats.drafted_tokens > 0
    if target == "same":
        assert spec_end.stats.acceptance_rate == 1.0
    else:
        assert spec_end.stats.accepted_tokens < spec_end.stats.drafted_tokens


def test_fixed_number_of_drafted_tokens_and_stop_string(models):
    plain, spec = engines(models, num_draft_tokens=5)
    full, _ = answer(plain, request(PROMPTS[1]))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected, plain_end = answer(plain, request(PROMPTS[1], stop=(stop,)))
    got, spec_end = answer(spec, request(PROMPTS[1], stop=(stop,)))
    assert got == expected == full[: full.index(stop)]
    assert spec_end.reason == plain_end.reason == "stop"
    assert spec_end.stats.accepted_tokens > 0


@pytest.mark.parametrize("kv_bits", [None, 8])
def test_prompt_cache_of_both_models_reused_across_turns(models, kv_bits):
    plain, spec = engines(models, "partial")
    history: list[ChatMessage] = []
    for turn, text in enumerate(PROMPTS):
        history.append(ChatMessage("user", text))
        req = ChatRequest(
            messages=tuple(history), enable_thinking=False, sampling=GREEDY, max_tokens=24,
            kv_bits=kv_bits, conversation_id="c1",
        )
        expected, _ = answer(plain, replace(req, conversation_id=None))  # cold
        got, finished = answer(spec, req)
        assert got == expected
        if turn:
            assert finished.stats.cached_tokens > 0
        draft_entry = spec._draft_caches.peek("c1")
        assert draft_entry is not None and draft_entry.offset() == len(draft_entry.tokens)
        # The draft's cache holds this turn's prompt, so the next turn feeds it only what's new.
        prompt = spec.prepare(req).prompt
        assert draft_entry.tokens[: len(prompt) - 1] == prompt[:-1]
        history.append(ChatMessage("assistant", got))


def test_cancel_mid_answer_leaves_consistent_caches(models):
    plain, spec = engines(models, "partial")
    req = request(PROMPTS[1], max_tokens=60, conversation_id="c")
    _, finished = answer(spec, req, cancel_after=3)
    assert finished.reason == "cancelled"
    entry = spec.prompt_caches.peek("c")
    assert entry is not None and entry.offset() == len(entry.tokens)
    assert len(entry.tokens) == len(spec.prepare(req).prompt) + finished.stats.generation_tokens
    # The next request from those caches answers exactly as a cold plain run.
    follow = request(PROMPTS[2], conversation_id="c")
    assert answer(spec, follow)[0] == answer(plain, replace(follow, conversation_id=None))[0]


def test_falls_back_to_plain_decoding_when_drafts_never_agree(models):
    plain, spec = engines(models, "unrelated")
    expected, _ = answer(plain, request(PROMPTS[1], max_tokens=90))
    got, finished = answer(spec, request(PROMPTS[1], max_tokens=90))
    assert got == expected
    assert finished.stats.speculative_fell_back
    # After falling back nothing more is drafted: far fewer drafts than tokens.
    assert finished.stats.drafted_tokens < finished.stats.generation_tokens


def test_refuses_a_draft_with_another_tokenizer_or_a_bad_draft_length(models):
    tiny = models["draft_tokenizer"]

    class Renamed:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def encode(self, text):
            return [t + 1 for t in tiny.encode(text)]

    with pytest.raises(RequestError, match="same tokenizer"):
        Engine(models["same"], models["tokenizer"], draft_model=models["draft"], draft_tokenizer=Renamed())
    with pytest.raises(RequestError, match="drafted tokens"):
        Engine(models["same"], models["tokenizer"], draft_model=models["draft"], num_draft_tokens=0)


def test_request_can_turn_the_draft_model_off(models):
    _, spec = engines(models)
    _, finished = answer(spec, request(PROMPTS[0], use_draft_model=False))
    assert finished.stats.speculative is None and finished.stats.drafted_tokens == 0


# ------------------------------------------------------------------ prompt lookup


DOCUMENT = (
    "The lighthouse keeper kept a logbook of every ship that passed the rocks at night. "
    "In the winter of the great storm he wrote that the lamp burned for nine days without rest, "
    "and that the fishermen of the harbour brought him bread and oil in small boats. "
    "When the storm ended the mayor gave him a silver medal and a new coat. "
) * 4


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_prompt_lookup_accepts_quotes_and_matches_plain(models, mode):
    tokenizer = models["tokenizer"]
    quote = "the lamp burned for nine days without rest, and that the fishermen of the harbour brought him bread"
    model = QuotingModel(models["unrelated"], tokenizer.encode(quote), tokenizer.token_to_id("<|im_end|>"))
    engine = Engine(model, tokenizer, prompt_lookup_min_tokens=200)
    req = request(f"{DOCUMENT}\n\nWhat did the keeper write about the storm?", max_tokens=80, prompt_lookup=mode)
    model.prompt_length = len(engine.prepare(req).prompt)
    assert model.prompt_length >= 200
    expected, plain_end = answer(engine, replace(req, prompt_lookup="off"))
    assert expected == quote and plain_end.stats.speculative is None
    got, finished = answer(engine, req)
    assert got == expected
    assert finished.stats.speculative == "prompt-lookup"
    assert finished.stats.accepted_tokens >= 10
    assert finished.stats.acceptance_rate >= 0.8


def test_prompt_lookup_auto_stays_off_for_short_prompts(models):
    engine = Engine(models["same"], models["tokenizer"])
    _, finished = answer(engine, request(PROMPTS[0]))
    assert finished.stats.speculative is None


def test_prompt_lookup_drafter_proposes_what_followed_the_last_ngram():
    drafter = PromptLookupDrafter()
    tokens = [1, 2, 3, 4, 5, 6, 7, 9, 9, 2, 3, 4]
    assert drafter.propose(tokens, 3) == [5, 6, 7]
    assert drafter.propose(tokens + [5], 2) == [6, 7]
    assert drafter.propose([8, 8, 10, 11], 3) == []  # no earlier occurrence of the suffix


def test_unknown_prompt_lookup_mode_is_a_request_error(models):
    engine = Engine(models["same"], models["tokenizer"])
    with pytest.raises(RequestError, match="Prompt lookup must be one of auto, on, off"):
        engine.prepare(request("x", prompt_lookup="sometimes"))


# ------------------------------------------------------------------ sampling


def _first_tokens(steps, n: int) -> tuple[int, ...]:
    out = []
    for token, _ in steps:
        out.append(token)
        if len(out) == n:
            break
    steps.close()
    return tuple(out)


def test_sampled_tokens_follow_the_target_distribution(models):
    """Joint distribution of the first two sampled tokens (top-3 each: 9 outcomes) over many
    seeds: speculative (drafting from the first step) against plain generate_step, and the
    draft's own sampling as a control that the check can tell distributions apart."""
    target, draft, tokenizer = models["partial"], models["draft"], models["tokenizer"]
    params = SamplingParams(temperature=1.5, top_p=1.0, top_k=3)
    prompt = tokenizer.encode("Once upon a time")
    seeds = range(300)

    def prefilled(model):
        layers = make_prompt_cache(model)
        model(mx.array(prompt[:-1])[None], cache=layers)
        mx.eval([c.state for c in layers])
        return layers

    def rewound(layers):  # one prefill for all seeds: back to the prompt after each run
        trim_prompt_cache(layers, layers[0].offset - (len(prompt) - 1))
        return layers

    def plain(model):
        layers = prefilled(model)
        return Counter(
            _seeded(seed, lambda: _first_tokens(generate_step(
                mx.array(prompt[-1:]), model, sampler=make_request_sampler(params, 10**6),
                prompt_cache=rewound(layers), max_tokens=2), 2))
            for seed in seeds
        )

    def speculative():
        layers = prefilled(target)
        # One drafter for all seeds: it trims its cache back to what each call shares.
        drafter = DraftModelDrafter(draft, make_prompt_cache(draft), [])

        def one():
            steps = speculative_steps(
                target, rewound(layers), prompt, drafter,
                sampler=make_request_sampler(params, 10**6), max_tokens=2,
                stats=stats, num_draft=1, calibration_steps=-1,
            )
            return _first_tokens(steps, 2)

        stats = SpeculationStats(drafter.kind)
        counts = Counter(_seeded(seed, one) for seed in seeds)
        assert 0 < stats.accepted < stats.drafted  # both paths ran: accepted and rejected drafts
        return counts

    reference, ours, control = plain(target), speculative(), plain(draft)
    assert _tv(reference, control) > 0.3  # the check has power: the draft's distribution differs
    assert _tv(reference, ours) < 0.15


def _seeded(seed, fn):
    mx.random.seed(seed)
    return fn()


def _tv(a: Counter, b: Counter) -> float:
    total_a, total_b = sum(a.values()), sum(b.values())
    return 0.5 * sum(abs(a[k] / total_a - b[k] / total_b) for k in set(a) | set(b))


# ------------------------------------------------------------------ command line


def test_cli_generate_with_a_draft_model_reports_speculation_in_json(paths, capsys):
    import json

    from mlx_backend.commands import cli

    draft_path, target_path = paths
    common = ["generate", "--model", str(target_path), "--prompt", PROMPTS[1], "--max-tokens", "20",
              "--temp", "0", "--top-p", "1", "--top-k", "0", "--no-think", "--json"]
    assert cli.main(common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert cli.main(common + ["--draft-model", str(draft_path), "--num-draft", "2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == plain["text"] and plain["speculative"] is None
    assert record["speculative"] == "draft-model" and record["drafted_tokens"] > 0
    assert record["acceptance_rate"] == round(record["accepted_tokens"] / record["drafted_tokens"], 4)


def test_cli_num_draft_without_a_draft_model_is_one_clear_line(paths, capsys):
    from mlx_backend.commands import cli

    code = cli.main(["generate", "--model", str(paths[1]), "--prompt", "hi", "--num-draft", "3"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "qwen-desk: --num-draft needs --draft-model."


# ------------------------------------------------------------------ hybrid models


class LinearStateModel:
    """A model whose cache can neither be trimmed nor snapshotted (a bare ArraysCache)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def make_cache(self):
        from mlx_lm.models.cache import ArraysCache

        return [ArraysCache(2) for _ in self._model.layers]


def test_a_cache_that_cannot_be_taken_back_refuses_speculation_with_the_reason(models):
    hybrid = LinearStateModel(models["same"])
    with pytest.raises(RequestError, match="keeps a state that can't be taken back"):
        Engine(hybrid, models["tokenizer"], draft_model=models["draft"])
    engine = Engine(hybrid, models["tokenizer"])
    with pytest.raises(RequestError, match="Prompt lookup needs a cache whose drafted tokens can be taken back"):
        engine.prepare(request("x", prompt_lookup="on"))
