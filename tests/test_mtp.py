"""The multi-token-prediction layer (models/mtp.py) and MTP drafting against plain decoding.

Random checkpoints get random ``mtp.*`` tensors named as the published ones
(tests/support/hybrid_checkpoints.py: transformers drops them on save). The MTP forward is
checked against a numpy reference written here from the definition, with the raw tensors;
decoding with the MTP drafting is checked token by token against plain decoding, and for a
construction with known agreement (``make_mtp_agree``) the acceptance is checked too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.generate import generate_step

from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.prompt_cache import rewind, take_snapshot
from mlx_backend.generation.sampling import make_request_sampler
from mlx_backend.generation.speculative import MtpDrafter, SpeculationStats, speculative_steps
from mlx_backend.loading.loader import load, load_model
from mlx_backend.models.mtp import forward_with_hidden, load_mtp
from tests.support.speculation import GREEDY, request, answer
from tests.support.hybrid_checkpoints import (
    hybrid_fixtures_available,
    make_mtp_agree,
    write_hybrid_checkpoint,
    write_mtp_checkpoint,
)

pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPTS = (
    "hello there",
    "Tell me a story about a clock that runs backwards, please.",
    "List three colours and say why you like them.",
)
needs_fixtures = pytest.mark.skipif(not hybrid_fixtures_available(), reason="Qwen3.5-family fixtures missing")


def argmax(x):
    return mx.argmax(x, axis=-1)


# ------------------------------------------------------------------ the module


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """512-id Qwen3.5 dense with MTP tensors (fast: no tokenizer)."""
    return write_mtp_checkpoint(tmp_path_factory.mktemp("mtp") / "dense", "dense", tokenizer=False, seed=4)


def _rms(x, w, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)


def _reference_mtp(t, tokens, hidden, rope_theta, rotary):
    """The MTP forward from its definition (vLLM's Qwen3_5MultiTokenPredictor), in numpy."""
    g = lambda name: t[f"mtp.{name}"].astype(np.float64)  # noqa: E731
    embed = t["model.language_model.embed_tokens.weight"].astype(np.float64)
    head = t["lm_head.weight"].astype(np.float64)
    e = _rms(embed[tokens], g("pre_fc_norm_embedding.weight"))
    h = _rms(hidden, g("pre_fc_norm_hidden.weight"))
    x = np.concatenate([e, h], -1) @ g("fc.weight").T
    L = len(tokens)
    p = "layers.0."
    a = _rms(x, g(p + "input_layernorm.weight"))
    hd = g(p + "self_attn.q_norm.weight").shape[0]
    q_all = (a @ g(p + "self_attn.q_proj.weight").T).reshape(L, -1, 2 * hd)
    q, gate = q_all[..., :hd], q_all[..., hd:]
    heads = q.shape[1]
    k = (a @ g(p + "self_attn.k_proj.weight").T).reshape(L, -1, hd)
    v = (a @ g(p + "self_attn.v_proj.weight").T).reshape(L, -1, hd)
    q, k = _rms(q, g(p + "self_attn.q_norm.weight")), _rms(k, g(p + "self_attn.k_norm.weight"))
    inv = rope_theta ** (-np.arange(0, rotary, 2) / rotary)
    angles = np.arange(L)[:, None] * inv[None]
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]

    def rope(u):
        half = rotary // 2
        u1, u2 = u[..., :half], u[..., half:rotary]
        return np.concatenate([u1 * cos - u2 * sin, u2 * cos + u1 * sin, u[..., rotary:]], -1)

    q, k = rope(q), rope(k)
    rep = heads // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
    scores = scores + np.triu(np.full((L, L), -np.inf), 1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    att = np.einsum("hqk,khd->qhd", weights, v).reshape(L, -1)
    att = att * (1 / (1 + np.exp(-gate.reshape(L, -1))))
    x = x + att @ g(p + "self_attn.o_proj.weight").T
    m = _rms(x, g(p + "post_attention_layernorm.weight"))
    up = m @ g(p + "mlp.up_proj.weight").T
    gated = m @ g(p + "mlp.gate_proj.weight").T
    x = x + (gated / (1 + np.exp(-gated)) * up) @ g(p + "mlp.down_proj.weight").T
    return _rms(x, g("norm.weight")) @ head.T


def test_mtp_forward_matches_a_reference_from_the_definition(small):
    from safetensors.numpy import load_file

    model = load_model(small)
    mtp = load_mtp(model)
    assert mtp is not None
    raw = load_file(str(small / "model.safetensors"))
    tokens = [3, 17, 250, 9, 41, 77]
    _, hidden = forward_with_hidden(model)(mx.array(tokens)[None], model.make_cache())
    # Pairs (h[p], t[p+1]): the MTP predicts t[p+2].
    logits, _ = mtp(mx.array(tokens[1:])[None], hidden[:, :-1], mtp.make_cache())
    text = model.load_info.config["text_config"]
    rope = text["rope_parameters"]
    rotary = int(text["head_dim"] * rope["partial_rotary_factor"])
    expected = _reference_mtp(raw, tokens[1:], np.array(hidden[0, :-1]).astype(np.float64), rope["rope_theta"], rotary)
    assert np.abs(np.array(logits[0]) - expected).max() < 2e-3 * np.abs(expected).max()
    # The weights matter: another MTP seed gives other logits.
    assert np.abs(expected).max() > 0.1


def test_a_checkpoint_without_mtp_tensors_has_no_mtp_and_decodes_plainly(tmp_path):
    path = write_hybrid_checkpoint(tmp_path / "plain", "dense", tokenizer=False, seed=5)
    model = load_model(path)
    assert load_mtp(model) is None


@pytest.mark.parametrize("kind", ["dense", "moe", "next"])
def test_mtp_drafting_is_greedy_identical_for_every_hybrid_kind(tmp_path, kind):
    """The verify loop with the MTP drafter against generate_step (512 ids, random weights,
    and the known-agreement construction: acceptance 100% there)."""
    path = write_mtp_checkpoint(tmp_path / kind, kind, tokenizer=False, seed=6)
    model = load_model(path)
    mtp = load_mtp(model)
    assert mtp is not None
    prompt = [5, 9, 17, 33, 101, 7, 250, 3]

    def run(model, mtp):
        expected = [t for t, _ in generate_step(mx.array(prompt), model, max_tokens=24, sampler=argmax,
                                                 prompt_cache=model.make_cache())]
        layers = model.make_cache()
        model(mx.array(prompt[:-1])[None], cache=layers)
        stats = SpeculationStats("mtp")
        got = [t for t, _ in speculative_steps(
            model, layers, prompt, MtpDrafter(mtp), sampler=argmax, max_tokens=24, stats=stats,
            forward=forward_with_hidden(model), num_draft=3, calibration_steps=-1)]
        assert got == expected
        assert all(layer.offset == len(prompt) + 24 for layer in layers)  # as generate_step leaves it
        return stats

    stats = run(model, mtp)
    assert stats.drafted > 0
    make_mtp_agree(model, mtp)
    agreed = run(model, mtp)
    assert agreed.drafted > 0 and agreed.accepted == agreed.drafted


# ------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    """Qwen3.5 dense with the 248K tokenizer and MTP tensors: loaded with and without its MTP,
    and the known-agreement and partial-agreement constructions."""
    if not hybrid_fixtures_available():
        pytest.skip("Qwen3.5-family fixtures missing")
    root = tmp_path_factory.mktemp("mtp-248k")
    path = write_mtp_checkpoint(root / "dense", "dense", seed=8)
    agree, tokenizer = load(path)
    agree_mtp = load_mtp(agree)
    make_mtp_agree(agree, agree_mtp)
    partial, _ = load(path)
    partial_mtp = load_mtp(partial)
    make_mtp_agree(partial, partial_mtp, mix=0.5)
    return dict(path=path, tokenizer=tokenizer, agree=(agree, agree_mtp), partial=(partial, partial_mtp))




@needs_fixtures
def test_engine_loads_the_mtp_and_says_so(qwen35):
    engine = Engine.load(qwen35["path"])
    assert engine.info.has_mtp and engine.mtp is not None
    assert not Engine.load(qwen35["path"], mtp=False).info.has_mtp
    # Random weights: greedy output identical with and without the MTP.
    for text in PROMPTS[:2]:
        got, finished = answer(engine, request(text))
        expected, plain_end = answer(engine, request(text, use_mtp=False))
        assert got == expected
        assert finished.stats.speculative == "mtp" and plain_end.stats.speculative is None


@needs_fixtures
@pytest.mark.parametrize("construction", ["agree", "partial"])
def test_greedy_mtp_is_token_identical_to_plain_with_known_acceptance(qwen35, construction):
    model, mtp = qwen35[construction]
    plain = Engine(model, qwen35["tokenizer"])
    spec = Engine(model, qwen35["tokenizer"], mtp=mtp)
    drafted = accepted = 0
    for text in PROMPTS:
        expected, _ = answer(plain, request(text))
        got, finished = answer(spec, request(text))
        assert got == expected
        assert finished.stats.speculative == "mtp"
        drafted += finished.stats.drafted_tokens
        accepted += finished.stats.accepted_tokens
    assert drafted > 0
    if construction == "agree":
        assert accepted == drafted
    else:
        assert 0 < accepted < drafted


@needs_fixtures
def test_mtp_multi_turn_with_the_prompt_cache_and_cancel(qwen35):
    model, mtp = qwen35["partial"]
    plain = Engine(model, qwen35["tokenizer"])
    spec = Engine(model, qwen35["tokenizer"], mtp=mtp)
    history: list[ChatMessage] = []
    for turn, text in enumerate(PROMPTS):
        history.append(ChatMessage("user", text))
        req = ChatRequest(messages=tuple(history), enable_thinking=False, sampling=GREEDY,
                          max_tokens=24, conversation_id="c1")
        expected, _ = answer(plain, replace(req, conversation_id=None))
        got, finished = answer(spec, req)
        assert got == expected and finished.stats.speculative == "mtp"
        if turn:
            assert finished.stats.cached_tokens > 0
        history.append(ChatMessage("assistant", got))
    # Cancel mid-answer: the cache holds exactly the tokens handed out and continues as plain.
    req = request(PROMPTS[1], max_tokens=60, conversation_id="c2")
    _, finished = answer(spec, req, cancel_after=3)
    assert finished.reason == "cancelled"
    entry = spec.prompt_caches.peek("c2")
    assert entry is not None and all(layer.offset == len(entry.tokens) for layer in entry.layers)
    assert len(entry.tokens) == len(spec.prepare(req).prompt) + finished.stats.generation_tokens
    fresh = model.make_cache()
    model(mx.array(entry.tokens)[None], cache=fresh)
    probe = mx.array([[11]])
    assert mx.allclose(model(probe, cache=fresh)[0, -1], model(probe, cache=list(entry.layers))[0, -1], atol=1e-4).item()


@needs_fixtures
def test_mtp_sampled_tokens_follow_the_target_distribution(qwen35):
    """First two sampled tokens (top-3 each) over many seeds, with the MTP drafting from the
    first step, against plain generate_step; plain sampling of the top token only is the
    control that the check can tell distributions apart. The MTP guesses greedily (the known
    agreement: the target's most likely token), the target samples: part of them are kept."""
    model, mtp = qwen35["agree"]
    params = SamplingParams(temperature=1.5, top_p=1.0, top_k=3)
    prompt = qwen35["tokenizer"].encode("Once upon a time")
    seeds = range(300)

    def prefilled(m):
        layers = m.make_cache()
        m(mx.array(prompt[:-1])[None], cache=layers)
        mx.eval([c.state for c in layers])
        return layers, {len(prompt) - 1: take_snapshot(layers)}

    def back(layers, marks):
        rewind(layers, layers[0].offset, dict(marks), len(prompt) - 1)
        return layers

    def plain(m, sampling=params):
        layers, marks = prefilled(m)
        counts = Counter()
        for seed in seeds:
            mx.random.seed(seed)
            steps = generate_step(mx.array(prompt[-1:]), m, sampler=make_request_sampler(sampling, 10**6),
                                  prompt_cache=back(layers, marks), max_tokens=2)
            counts[tuple(t for t, _ in steps)] += 1
        return counts

    def ours():
        layers, marks = prefilled(model)
        # The prompt's hidden states, for each run's MTP cache (the engine fills it in prefill).
        _, hidden = forward_with_hidden(model)(mx.array(prompt[:-1])[None], model.make_cache())
        stats = SpeculationStats("mtp")
        counts = Counter()
        for seed in seeds:
            mx.random.seed(seed)
            drafter = MtpDrafter(mtp)
            drafter.extend(prompt[:-1], hidden[0])
            steps = speculative_steps(model, back(layers, marks), prompt, drafter,
                                      sampler=make_request_sampler(params, 10**6), max_tokens=2,
                                      stats=stats, forward=forward_with_hidden(model), num_draft=1,
                                      calibration_steps=-1)
            counts[tuple(t for t, _ in steps)] += 1
        assert 0 < stats.accepted < stats.drafted
        return counts

    reference, got, control = plain(model), ours(), plain(model, replace(params, top_k=1))
    tv = lambda a, b: 0.5 * sum(abs(a[k] / 300 - b[k] / 300) for k in set(a) | set(b))  # noqa: E731
    assert tv(reference, control) > 0.3
    assert tv(reference, got) < 0.15


# ------------------------------------------------------------------ command line


def test_cli_generate_drafts_with_the_mtp_unless_no_mtp(tmp_path, capsys):
    import json
    import math

    from mlx_backend.commands import cli
    from tests.support.tokenizers import write_tiny_tokenizer

    path = tmp_path / "tiny-mtp"
    count = write_tiny_tokenizer(path)
    write_mtp_checkpoint(path, "dense", tokenizer=False, seed=2, vocab_size=64 * math.ceil(count / 64))
    common = ["generate", "--model", str(path), "--prompt", PROMPTS[1], "--max-tokens", "16",
              "--temp", "0", "--top-p", "1", "--top-k", "0", "--no-think", "--json"]
    assert cli.main(common) == 0
    with_mtp = json.loads(capsys.readouterr().out)
    assert cli.main(common + ["--no-mtp"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert with_mtp["text"] == plain["text"]
    assert with_mtp["speculative"] == "mtp" and with_mtp["drafted_tokens"] > 0
    assert plain["speculative"] is None
