"""The hybrid rows of the benchmark: Qwen3.5-0.8B and a Qwen3.5-35B-A3B-shaped MoE vs mlx-lm.

Each model is a random-weight 4-bit folder in the layout mlx-community publishes (mlx-lm's own
model class, quantized with mlx-lm's ``quantize_model`` and its MoE predicate, the 248K
tokenizer of the shared fixtures), so our engine and ``mlx_lm.load`` read the same bytes. The
dimensions are the published ``text_config``'s; depth (and, for the MoE, the expert count) is
cut so a run fits this machine, always keeping the 3:1 linear / full-attention pattern.

Rows per model, medians of alternating runs after a warm-up:

- decode and prefill tokens/s, ours vs mlx-lm's ``stream_generate``;
- turn-N time to first token of a chat built through our engine, three ways on the same prompt:
  ours with the conversation's prompt cache; mlx-lm's server policy replayed with its own
  ``LRUPromptCache`` (entries inserted where ``mlx_lm.server`` inserts them: after each reply,
  keyed by prompt + generated tokens, and at the end of the prompt's "user" segment, just before
  the think tail; a hybrid cache cannot be trimmed, so only an entry that is an exact prefix of
  the new prompt is reused); and mlx-lm re-prefilling the whole conversation.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
from mlx_lm.generate import stream_generate
from mlx_lm.models.cache import LRUPromptCache, make_prompt_cache
from mlx_lm.sample_utils import make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import quantize_model, save_config, save_model

from mlx_backend import ChatMessage, Engine
from mlx_backend.memory.sizes import model_nbytes
from tests.support.hybrid_checkpoints import FAMILY, hybrid_fixtures_available, write_248k_tokenizer

# The model key mlx-lm's server files its cache entries under (one model here).
MODEL_KEY = ("bench", None, None)
THINK_TAIL_WINDOW = 11  # mlx_lm.server looks for the think tail in the prompt's last 11 tokens


@dataclass(frozen=True)
class HybridModel:
    label: str
    release: str  # folder in the shared fixtures whose config.json gives the dimensions
    layers: int
    experts: Optional[int] = None  # None: the published count (or a dense model)


@dataclass
class HybridResult:
    model: HybridModel
    published_layers: int
    published_experts: Optional[int]
    weights_bytes: int
    decode: tuple[float, float]  # ours, mlx-lm (tokens/s)
    prefill: tuple[float, float]
    prefill_tokens: int
    chat_prompt_tokens: int
    chat_ttft: tuple[float, float, float]  # ours, mlx-lm server policy, mlx-lm re-prefill (s)
    chat_reused: tuple[int, int]  # ours, mlx-lm server policy
    wall_s: float


def hybrid_models(args: argparse.Namespace) -> list[HybridModel]:
    return [
        HybridModel("Qwen3.5-0.8B", "Qwen3.5-0.8B", args.hybrid_layers),
        HybridModel("Qwen3.5-35B-A3B", "Qwen3.5-35B-A3B", args.hybrid_layers, args.moe_experts),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hybrid rows (Qwen3.5 shapes)")
    group.add_argument(
        "--hybrid-layers", type=int, default=4,
        help="decoder layers of both hybrid models, a multiple of 4 (3 linear + 1 full each; default 4)",
    )
    group.add_argument(
        "--moe-experts", type=int, default=32,
        help="experts per MoE layer (published: 256; default 32, top-8 kept)",
    )
    group.add_argument("--hybrid-runs", type=int, default=2, help="measured runs per side (median)")
    group.add_argument("--hybrid-prefill-tokens", type=int, default=256, help="prompt tokens for prefill")
    group.add_argument("--hybrid-decode-tokens", type=int, default=8, help="tokens per decode run")
    group.add_argument("--hybrid-user-tokens", type=int, default=40, help="tokens per user message")
    group.add_argument("--hybrid-reply-tokens", type=int, default=12, help="tokens per assistant reply")


# ---------------------------------------------------------------- the checkpoint


def text_config(release: str) -> dict:
    return json.loads((FAMILY / release / "config.json").read_text(encoding="utf-8"))


def build_checkpoint(dst: Path, spec: HybridModel) -> Path:
    """A random 4-bit folder with the release's dimensions at ``spec``'s depth and experts."""
    if spec.layers % 4:
        raise SystemExit("--hybrid-layers must be a multiple of 4 (three linear layers per full one)")
    config = text_config(spec.release)
    text = config["text_config"]
    text["num_hidden_layers"] = spec.layers
    text["layer_types"] = text["layer_types"][: spec.layers]
    if spec.experts is not None and "num_experts" in text:
        text["num_experts"] = spec.experts
    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")  # qwen3_5, qwen3_5_moe
    model = module.Model(module.ModelArgs.from_dict(config))
    model.set_dtype(mx.float32)  # scales and norms: bf16 arithmetic is emulated on x86 CPUs
    model, config = quantize_model(model, config, 64, 4, quant_predicate=model.quant_predicate)
    mx.eval(model.parameters())
    save_model(dst, model)
    save_config(config, dst / "config.json")
    write_248k_tokenizer(dst, "qwen3.5")
    return dst


# ---------------------------------------------------------------- timing helpers


def _ttft_mlx_lm(model: nn.Module, tokenizer: TokenizerWrapper, tokens: list[int], cache) -> float:
    """Seconds to the first token of ``stream_generate`` over ``tokens`` from ``cache``."""
    start = time.perf_counter()
    for _ in stream_generate(
        model, tokenizer, tokens, max_tokens=1, sampler=make_sampler(temp=0.0), prompt_cache=cache
    ):
        return time.perf_counter() - start
    raise RuntimeError("mlx-lm generated no token")


def _feed(model: nn.Module, cache: list, tokens: list[int], step: int = 512) -> None:
    """Run ``tokens`` through the model into ``cache`` (what prefill or generation leaves)."""
    for i in range(0, len(tokens), step):
        model(mx.array(tokens[i : i + step])[None], cache=cache)
        mx.eval([c.state for c in cache])


def think_tail_start(think: int, prompt: list[int]) -> int:
    """Where mlx_lm.server's "user" segment of a chat prompt ends (its ``_tokenize``): at the
    ``<think>`` id ``think`` within the last 11 tokens, if any."""
    for i in range(len(prompt) - 1, max(len(prompt) - THINK_TAIL_WINDOW, 0) - 1, -1):
        if prompt[i] == think:
            return i
    return len(prompt)


class ServerPolicy:
    """mlx-lm's server cache for one model, fed as its batched path feeds it."""

    def __init__(self, model: nn.Module, tokenizer: TokenizerWrapper, think_id: int):
        self.model, self.tokenizer, self.think_id = model, tokenizer, think_id
        self.store = LRUPromptCache(max_size=64)

    def fetch(self, prompt: list[int]) -> tuple[list, int]:
        cache, rest = self.store.fetch_nearest_cache(MODEL_KEY, prompt)
        if cache is None:
            return make_prompt_cache(self.model), 0
        return cache, len(prompt) - len(rest)

    def turn(self, prompt: list[int], generated: list[int]) -> None:
        """One served turn: prefill from the nearest entry, checkpoint the user segment, then the
        reply (teacher-forced with ``generated``), filed under prompt + generated tokens."""
        cache, reused = self.fetch(prompt)
        tail = think_tail_start(self.think_id, prompt)
        if reused < tail:
            _feed(self.model, cache, prompt[reused:tail])
            self.store.insert_cache(MODEL_KEY, prompt[:tail], copy.deepcopy(cache), cache_type="user")
            reused = tail
        # Generation feeds every generated token but the last one through the model.
        _feed(self.model, cache, prompt[reused:] + generated[:-1])
        self.store.insert_cache(MODEL_KEY, prompt + generated, cache, cache_type="assistant")

    def ttft(self, prompt: list[int]) -> tuple[float, int]:
        start = time.perf_counter()
        cache, reused = self.fetch(prompt)  # the deep copy the server makes is part of its TTFT
        elapsed = time.perf_counter() - start
        return elapsed + _ttft_mlx_lm(self.model, self.tokenizer, prompt[reused:], cache), reused


# ---------------------------------------------------------------- one model


def measure(spec: HybridModel, args: argparse.Namespace, run_ours: Callable, run_mlx_lm: Callable,
            alternate: Callable, user_text: Callable, chat_request: Callable, log: Callable) -> HybridResult:
    started = time.perf_counter()
    published = text_config(spec.release)["text_config"]
    with tempfile.TemporaryDirectory(prefix="qwen-desk-bench-hybrid-") as tmp:
        log(f"{spec.label}: writing a random {spec.layers}-layer 4-bit checkpoint")
        folder = build_checkpoint(Path(tmp) / "model", spec)
        engine = Engine.load(folder)
        model, tokenizer = mlx_lm.load(str(folder))
        return _measure_loaded(spec, args, engine, model, tokenizer, started, published,
                               run_ours, run_mlx_lm, alternate, user_text, chat_request, log)


def _measure_loaded(spec, args, engine, model, tokenizer, started, published,
                    run_ours, run_mlx_lm, alternate, user_text, chat_request, log) -> HybridResult:
    weights = model_nbytes(engine.model)
    median = statistics.median

    log(f"{spec.label}: warm-up")
    warm = chat_request([ChatMessage("user", "Hello there.")], 2)
    run_ours(engine, warm)
    run_mlx_lm(model, tokenizer, engine.prepare(warm).prompt, 2)

    log(f"{spec.label}: decode")
    question = chat_request([ChatMessage("user", user_text(engine, 24, 0))], args.hybrid_decode_tokens)
    question_ids = engine.prepare(question).prompt
    dec_o, dec_t = alternate(
        args.hybrid_runs,
        lambda: run_ours(engine, question),
        lambda: run_mlx_lm(model, tokenizer, question_ids, args.hybrid_decode_tokens),
    )

    log(f"{spec.label}: prefill (~{args.hybrid_prefill_tokens} tokens)")
    long_request = chat_request([ChatMessage("user", user_text(engine, args.hybrid_prefill_tokens - 14, 1))], 1)
    long_ids = engine.prepare(long_request).prompt
    pre_o, pre_t = alternate(
        args.hybrid_runs,
        lambda: run_ours(engine, long_request),
        lambda: run_mlx_lm(model, tokenizer, long_ids, 1),
    )

    log(f"{spec.label}: {args.turns}-turn chat")
    chat = multi_turn(engine, model, tokenizer, args, user_text, chat_request, run_ours)

    return HybridResult(
        model=spec,
        published_layers=published["num_hidden_layers"],
        published_experts=published.get("num_experts"),
        weights_bytes=weights,
        decode=(median(t.decode_tps for t in dec_o), median(t.decode_tps for t in dec_t)),
        prefill=(median(len(long_ids) / t.ttft_s for t in pre_o), median(len(long_ids) / t.ttft_s for t in pre_t)),
        prefill_tokens=len(long_ids),
        chat_prompt_tokens=chat[0],
        chat_ttft=chat[1],
        chat_reused=chat[2],
        wall_s=time.perf_counter() - started,
    )


def multi_turn(engine: Engine, model, tokenizer, args, user_text, chat_request, run_ours):
    """Build a chat through our engine (turns 1..N-1, sampled replies), replay the same turns
    through mlx-lm's server cache, then time turn N three ways on the same prompt ids."""
    conversation = "bench-hybrid-chat"
    engine.clear_caches()
    # Special ids from our tokenizer: the prompts are ours, and mlx-lm's wrapper of this
    # folder's slow tokenizer maps "<think>" to another id.
    server = ServerPolicy(model, tokenizer, engine.tokenizer.token_to_id("<think>"))
    im_end = engine.tokenizer.token_to_id("<|im_end|>")
    history: list[ChatMessage] = []
    for turn in range(args.turns - 1):
        history.append(ChatMessage("user", user_text(engine, args.hybrid_user_tokens, 10 + turn)))
        request = chat_request(history, args.hybrid_reply_tokens, conversation, seed=turn)
        prompt = engine.prepare(request).prompt
        reply = "".join(getattr(event, "text", "") for event in engine.stream(request))
        history.append(ChatMessage("assistant", reply))
        # The server's generated ids: the reply's tokens and the end-of-turn token.
        server.turn(prompt, engine.tokenizer.encode(reply) + [im_end])
    history.append(ChatMessage("user", user_text(engine, args.hybrid_user_tokens, 99)))
    last = chat_request(history, 1, conversation)
    prompt = engine.prepare(last).prompt
    # Every run of ours starts from the store exactly as turn N-1 left it (whatever it keeps).
    saved = copy.deepcopy(engine.prompt_caches)

    def ours():
        engine.prompt_caches = copy.deepcopy(saved)
        timing = run_ours(engine, last)
        return timing.ttft_s, timing.cached_tokens

    ours_runs, server_runs, fresh_runs = [], [], []
    for i in range(args.hybrid_runs):  # rotate the order so drift hits all three alike
        steps = [
            lambda: ours_runs.append(ours()),
            lambda: server_runs.append(server.ttft(prompt)),
            lambda: fresh_runs.append(_ttft_mlx_lm(model, tokenizer, prompt, make_prompt_cache(model))),
        ]
        for k in range(3):
            steps[(i + k) % 3]()
    engine.prompt_caches = saved
    engine.clear_caches()
    median = statistics.median
    return (
        len(prompt),
        (median(t for t, _ in ours_runs), median(t for t, _ in server_runs), median(fresh_runs)),
        (ours_runs[0][1], server_runs[0][1]),
    )


# ---------------------------------------------------------------- the table


def speedup(ratio: float) -> str:
    """Their time over ours, said the way round that reads (never "0.25x faster")."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def rows(result: HybridResult, turns: int) -> list[tuple[str, str, str, str, str]]:
    spec = result.model
    name = f"{spec.label}, {spec.layers}/{result.published_layers} layers"
    if spec.experts is not None and result.published_experts:
        name += f", {spec.experts}/{result.published_experts} experts"
    dec_o, dec_t = result.decode
    pre_o, pre_t = result.prefill
    ours, server, fresh = result.chat_ttft
    reused_o, reused_s = result.chat_reused
    n = result.chat_prompt_tokens
    return [
        (f"{name}: decode tokens/s", f"{dec_o:.2f}", f"{dec_t:.2f}", f"{dec_o / dec_t:.3f}", ">= 0.98"),
        (
            f"{name}: prefill tokens/s ({result.prefill_tokens:,}-token prompt)",
            f"{pre_o:.1f}", f"{pre_t:.1f}", f"{pre_o / pre_t:.3f}", ">= 0.98",
        ),
        (
            f"{name}: turn-{turns} time to first token, {n:,}-token chat, vs mlx-lm's server "
            f"cache (exact-prefix reuse; ours {reused_o:,} / mlx-lm {reused_s:,} tokens reused)",
            f"{ours:.2f} s", f"{server:.2f} s", speedup(server / ours), "",
        ),
        (
            f"  the same vs mlx-lm re-prefilling all {n:,} tokens",
            f"{ours:.2f} s", f"{fresh:.2f} s", speedup(fresh / ours), "",
        ),
    ]


def notes(results: list[HybridResult], args: argparse.Namespace) -> list[str]:
    if not results:
        return []
    sizes = ", ".join(f"{r.model.label} {r.weights_bytes / 1e6:.0f} MB ({r.wall_s:.0f} s)" for r in results)
    return [
        f"- Hybrid rows: random-weight 4-bit folders in mlx-community's layout (mlx-lm's model "
        f"class, its quantize_model and MoE predicate, float32 scales), the published "
        f"text_config's dimensions and the 248K vocabulary kept, depth cut to "
        f"{args.hybrid_layers} layers (3 Gated DeltaNet : 1 full attention) and the MoE to "
        f"{args.moe_experts} experts (top-8 and the shared expert kept) to fit this machine; "
        f"weights and wall time: {sizes}. On MLX's CPU backend the gated-delta recurrence runs "
        f"mlx-lm's per-token ops loop (its kernel is Metal-only) on both sides, so absolute "
        f"speeds are far below a Mac's; runs per side: {args.hybrid_runs}.",
        f"- Hybrid chat: {args.turns} turns of a {args.hybrid_user_tokens}-token message and a "
        f"sampled reply of up to {args.hybrid_reply_tokens} tokens, built through our engine; the "
        f"same turns replayed into mlx-lm's LRUPromptCache where its server inserts entries (after "
        f"each reply, and at the end of each prompt's user segment before the think tail). The "
        f"template drops earlier replies' think blocks, so the after-reply entry is never a prefix "
        f"of the next prompt and mlx-lm reuses the user-segment entry: it re-prefills the last "
        f"reply and the new message (its sequential path, with no user-segment entry, re-prefills "
        f"everything, the last row). Ours resumes from the linear-state snapshot taken after the "
        f"re-encoded reply and prefills only the new message and the generation prompt; the "
        f"longer the replies, the wider the gap to mlx-lm's server.",
    ]


def available() -> bool:
    return hybrid_fixtures_available()
