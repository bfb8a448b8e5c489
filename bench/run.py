"""Qwen Desk's engine vs plain mlx-lm, measured side by side in one process.

Both sides load the same random-weight 4-bit checkpoint with Qwen3-0.6B's shapes (written by
the test suite's ``write_random_checkpoint``, quantized by our converter) and get the same
prompt token ids, greedy decoding. After one warm-up each, runs alternate between the sides
in ABBA order (so drift and other load hit both alike) and the table shows medians:

- decode tokens/s: the tokens after the first over the time from first to last token;
- prefill tokens/s on a ~2048-token prompt: prompt tokens over the time to first token;
- time to first token of the last turn of a chat: ours with the conversation's prompt cache,
  mlx-lm re-prefilling the whole conversation (what a stateless generate call does);
- peak memory: the model's weights plus the highest allocation above the idle level;
- the decode ceiling: measured memory bandwidth over the bytes a token must read (weights).

On MLX's CPU backend (Linux) full-depth prefill takes far too long, so the default there is 2 of
the 28 layers and float32 scales (bf16 arithmetic is emulated on x86); every ratio compares the
same kernels, so they stay meaningful.

It writes its checkpoint with the test suite's helpers (``tests/support``), so it runs from a
source checkout only, not from an installed app:

    python bench/run.py [--quick] [--json] [--layers N] [--only all|qwen3|hybrid] [--output table.md]

``--json`` prints the figures as one JSON object with stable keys (``JSON_KEYS``; a figure this
run did not measure is null, with the reason under "notes"), the table goes to stderr.
``--quick`` is a reduced set (short prompts, one run each) that finishes in a few minutes.

Beside the Qwen3 rows, two app-level rows: time to first token when a 4,000+-token chat is
reopened after a restart (``bench/restart_ttft.py``: fresh processes, restored from the prompt
cache on disk vs re-prefilled), and tokens per second that reach the transcript through the
real worker thread, signals and rendering vs the engine alone (``bench/app_path.py``), with the
cost of one streaming render update at 100 / 2,000 / 10,000 answer tokens.

``--only hybrid`` runs just the Qwen3.5-shaped rows of ``bench/hybrid.py`` (Qwen3.5-0.8B and a
35B-A3B-shaped MoE at reduced depth: decode, prefill, and turn-N time to first token vs mlx-lm's
server cache and vs re-prefilling); ``--only qwen3`` just the Qwen3-0.6B rows above.

One file on purpose: every measurement sits beside its mlx-lm twin, so a reader can check that
both sides get the same prompt, sampler and timing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx_lm  # noqa: E402
from mlx_lm.generate import stream_generate  # noqa: E402
from mlx_lm.models.cache import trim_prompt_cache  # noqa: E402
from mlx_lm.sample_utils import make_sampler  # noqa: E402
from mlx_lm.tokenizer_utils import TokenizerWrapper  # noqa: E402

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished, PrefillProgress, SamplingParams  # noqa: E402
from mlx_backend.memory.sizes import model_nbytes  # noqa: E402
from mlx_backend.generation.prompt_cache import common_prefix_length  # noqa: E402
from mlx_backend.loading.quantize import convert  # noqa: E402
from tests.support.checkpoints import write_random_checkpoint  # noqa: E402
from tests.support.tokenizers import qwen3_fixtures_available  # noqa: E402

from bench import app_path, hybrid, restart_ttft, speculative  # noqa: E402

# The keys of ``--json``, always present (null when not measured; "notes" says why).
JSON_KEYS = (
    "decode_ratio",
    "prefill_ratio",
    "turn5_ttft_speedup",
    "peak_memory_ratio",
    "speculative_speedup",
    "speculative_vs_mlx_lm",
    "mtp_speedup",
    "restart_ttft_speedup",
    "app_path_ratio",
)

# Qwen3-0.6B's config.json (the fields that shape compute and memory).
QWEN3_0_6B = {
    "hidden_size": 1024,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 40960,
}
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
# Greedy decoding of random weights soon repeats one token: chat replies are sampled instead, so
# every turn has a reply of about the requested length.
SAMPLED = SamplingParams(temperature=1.0, top_p=1.0, top_k=0)
FILLER = (
    "The committee reviewed the quarterly figures for every regional office and noted that "
    "shipping delays, currency swings and a late harvest explained most of the variance, while "
    "the northern warehouses reported steady demand for spare parts and seasonal equipment. "
)


@dataclass
class Timing:
    ttft_s: float
    decode_tps: float
    tokens: int
    peak_bytes: int  # highest allocation above the idle level during the run
    cached_tokens: int = 0  # prompt tokens our engine served from its prompt cache


# ---------------------------------------------------------------- options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    parser.add_argument(
        "--layers",
        type=int,
        help="decoder layers (default: Qwen3-0.6B's 28 on Apple Silicon, 2 on MLX's CPU backend)",
    )
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float16", "float32"),
        help="dtype of scales and norms (default: bfloat16 on Apple Silicon, float32 on CPU)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="measured prefill and chat runs per side (median)"
    )
    parser.add_argument("--decode-runs", type=int, default=5, help="measured decode runs per side")
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens per decode run")
    parser.add_argument("--prefill-tokens", type=int, default=2048, help="prompt tokens for prefill")
    parser.add_argument("--turns", type=int, default=5, help="chat turns for the prompt-cache test")
    parser.add_argument("--user-tokens", type=int, default=150, help="tokens per user message")
    parser.add_argument("--reply-tokens", type=int, default=150, help="tokens per assistant reply")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 layers, 1 run, short prompts (the ratios are not meaningful)",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown table to this file")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the figures as JSON with stable keys (the table goes to stderr)",
    )
    parser.add_argument(
        "--restart-tokens", type=int, default=4200, help="prompt tokens of the chat reopened after a restart"
    )
    parser.add_argument(
        "--app-tokens", type=int, default=1000, help="answer tokens per app-path run (engine alone vs the app)"
    )
    parser.add_argument(
        "--only",
        choices=("all", "qwen3", "hybrid", "speculative"),
        default="all",
        help="which rows: the Qwen3-0.6B-shaped ones, the hybrid Qwen3.5 ones, or all (default)",
    )
    hybrid.add_arguments(parser)
    speculative.add_arguments(parser)


# ---------------------------------------------------------------- the two sides


def idle_memory() -> int:
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    return mx.get_active_memory()


def run_ours(engine: Engine, request: ChatRequest) -> Timing:
    """Time one request through our engine, consuming every event like the app's worker."""
    idle = idle_memory()
    start = time.perf_counter()
    first = end = None
    tokens = cached = 0
    for event in engine.stream(request):
        if isinstance(event, PrefillProgress) and event.done == event.total and event.eta_s == 0.0:
            first = time.perf_counter()  # emitted as soon as the first token is sampled
        elif isinstance(event, Finished):
            end = time.perf_counter()
            tokens = event.stats.generation_tokens
            cached = event.stats.cached_tokens
            if event.reason == "error":
                raise RuntimeError("our engine failed during the benchmark")
    timing = _timing(start, first, end, tokens, idle)
    timing.cached_tokens = cached
    return timing


def run_mlx_lm(model: nn.Module, tokenizer: TokenizerWrapper, prompt: list[int], max_tokens: int) -> Timing:
    idle = idle_memory()
    start = time.perf_counter()
    first = end = None
    tokens = 0
    sampler = make_sampler(temp=0.0)
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=sampler):
        now = time.perf_counter()
        first = first or now
        end = now
        tokens = response.generation_tokens
    return _timing(start, first, end, tokens, idle)


def _timing(start: float, first: Optional[float], end: Optional[float], tokens: int, idle: int) -> Timing:
    assert first is not None and end is not None, "no token was generated"
    decode = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return Timing(first - start, decode, tokens, mx.get_peak_memory() - idle)


def alternate(
    runs: int, ours: Callable[[], Timing], theirs: Callable[[], Timing]
) -> tuple[list[Timing], list[Timing]]:
    """ABBA-ordered runs: A B, B A, A B, ..."""
    mine, other = [], []
    for i in range(runs):
        if i % 2 == 0:
            mine.append(ours())
            other.append(theirs())
        else:
            other.append(theirs())
            mine.append(ours())
    return mine, other


# ---------------------------------------------------------------- prompts


def user_text(engine: Engine, tokens: int, salt: int) -> str:
    """English filler that tokenizes to at most ``tokens`` tokens, different per ``salt``."""
    words = (f"Report {salt}. " + FILLER * (tokens // 20 + 2)).split(" ")
    low, high = 1, len(words)
    while low < high:  # the most words within the budget
        mid = (low + high + 1) // 2
        if len(engine.tokenizer.encode(" ".join(words[:mid]))) <= tokens:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def chat_request(
    messages: Sequence[ChatMessage], max_tokens: int, conversation: Optional[str] = None, seed: Optional[int] = None
) -> ChatRequest:
    return ChatRequest(
        messages=tuple(messages),
        conversation_id=conversation,
        enable_thinking=False,
        sampling=GREEDY if seed is None else SAMPLED,
        max_tokens=max_tokens,
        seed=seed,
    )


# ---------------------------------------------------------------- the measurements


def memory_bandwidth() -> float:
    """Bytes per second of a large array operation (one read + one write), best of five."""
    a = mx.random.uniform(shape=(64 * 2**20,))  # 256 MiB of float32
    mx.eval(a)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        b = a + 1.0
        mx.eval(b)
        best = min(best, time.perf_counter() - start)
        del b
    return 2 * a.nbytes / best


def build_checkpoint(root: Path, layers: int, dtype: str) -> Path:
    tokenizer = "qwen3" if qwen3_fixtures_available() else "tiny"
    shapes = {**QWEN3_0_6B, "num_hidden_layers": layers}
    # A small embedding scale (like trained models) keeps the random model from just repeating
    # its input token, so replies are real text.
    source = write_random_checkpoint(
        root / "source", tokenizer=tokenizer, dtype=dtype, embedding_std=0.02, **shapes
    )
    return convert(source, root / "4bit", bits=4, group_size=64)


@dataclass
class ChatResult:
    reencoded: list[Timing]  # ours, the cache as the previous turn left it
    prefix_only: list[Timing]  # ours, the cache cut back to what plain prefix reuse keeps
    theirs: list[Timing]  # mlx-lm prefilling the whole conversation
    prompt_tokens: int
    reencoded_cached: int
    prefix_cached: int
    reencode_s: float  # spent after the previous reply's Finished event, while the user reads
    reply_tokens: list[int]  # each reply's length as the history renders it


def multi_turn(
    engine: Engine, model: nn.Module, tokenizer: TokenizerWrapper, args: argparse.Namespace
) -> ChatResult:
    """Build a chat through the engine, then time its last turn three ways."""
    conversation = "bench-chat"
    engine.clear_caches()
    history: list[ChatMessage] = []
    reply_tokens: list[int] = []
    reencode_s = 0.0
    for turn in range(args.turns - 1):
        history.append(ChatMessage("user", user_text(engine, args.user_tokens, 10 + turn)))
        previous = chat_request(history, args.reply_tokens, conversation, seed=turn)
        reply = []
        finished_at = None
        for event in engine.stream(previous):
            reply.append(getattr(event, "text", ""))
            if isinstance(event, Finished):
                finished_at = time.perf_counter()
        reencode_s = time.perf_counter() - finished_at
        history.append(ChatMessage("assistant", "".join(reply)))
        reply_tokens.append(len(engine.tokenizer.encode(history[-1].content)))
    history.append(ChatMessage("user", user_text(engine, args.user_tokens, 99)))
    last = chat_request(history, 1, conversation)
    prompt = engine.prepare(last).prompt
    snapshot = copy.deepcopy(engine.prompt_caches.peek(conversation))
    # Without re-encoding, the previous turn's cache (its prompt, then the generated reply after
    # the template's think block) matches the new prompt only up to where that reply starts.
    prefix = common_prefix_length(engine.prepare(previous).prompt, prompt)

    def ours(keep: int) -> Timing:
        # Every run starts from the cache exactly as the previous turn left it (or cut back).
        layers = copy.deepcopy(snapshot.layers)
        trim_prompt_cache(layers, len(snapshot.tokens) - keep)
        engine.prompt_caches.put(conversation, layers, snapshot.tokens[:keep], snapshot.signature)
        return run_ours(engine, last)

    full = len(snapshot.tokens)
    reencoded, theirs = alternate(args.runs, lambda: ours(full), lambda: run_mlx_lm(model, tokenizer, prompt, 1))
    prefix_only = [ours(prefix) for _ in range(args.runs)]
    engine.clear_caches()
    return ChatResult(
        reencoded=reencoded,
        prefix_only=prefix_only,
        theirs=theirs,
        prompt_tokens=len(prompt),
        reencoded_cached=min(common_prefix_length(snapshot.tokens, prompt), len(prompt) - 1),
        prefix_cached=prefix,
        reencode_s=reencode_s,
        reply_tokens=reply_tokens,
    )


@dataclass
class Section:
    """A group of rows: its markdown table, its figures for ``--json``, why some are missing."""

    table: str
    figures: dict[str, object]
    notes: dict[str, str]


def speculative_section(args: argparse.Namespace, command: str) -> Section:
    """bench/speculative.py's rows; the JSON figures are those of the pair that agrees fully."""
    table, figures = speculative.run(args, command, log)
    return Section(table, figures, {})


# Row groups after the Qwen3 rows, in order: name -> function(args, command) -> Section. A group
# that fills JSON_KEYS returns them in Section.figures.
SECTIONS: dict[str, Callable[[argparse.Namespace, str], Section]] = {}


def run_benchmark(args: argparse.Namespace) -> int:
    command = " ".join(["python bench/run.py", *sys.argv[1:]])
    started = time.perf_counter()
    sections: list[Section] = []
    # With --json, stdout carries the JSON alone: what the libraries print goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        if args.only in ("all", "qwen3"):
            sections.append(run_qwen3(args, command))
            sections += [section(args, command) for section in SECTIONS.values()]
        if args.only in ("all", "hybrid"):
            sections.append(Section(run_hybrid(args, command), {}, {}))
        if args.only in ("all", "speculative"):
            sections.append(speculative_section(args, command))
    table = "\n\n".join(section.table for section in sections if section.table)
    figures: dict[str, object] = {key: None for key in JSON_KEYS}
    notes: dict[str, str] = {}
    for section in sections:
        figures.update(section.figures)
        notes.update(section.notes)
    for key in JSON_KEYS:
        if figures[key] is None and key not in notes:
            notes[key] = f"not measured with --only {args.only}"
    if args.json:
        log(table)
        figures.update(
            notes={k: v for k, v in notes.items() if figures.get(k) is None},
            quick=bool(args.quick),
            command=command,
            wall_s=round(time.perf_counter() - started, 1),
        )
        print(json.dumps(figures, indent=2))
    else:
        print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


def restart_section(args: argparse.Namespace, command: str) -> Section:
    """A 4,000+-token chat reopened in a fresh process: restored from disk vs re-prefilled."""
    with tempfile.TemporaryDirectory(prefix="qwen-desk-bench-restart-") as tmp:
        # --quick: the small fast model (a 4,000-token prefill of the bench model takes minutes
        # on a loaded CPU); the chat keeps its full length either way.
        folder = app_path.fast_checkpoint(Path(tmp)) if args.quick else build_checkpoint(Path(tmp), args.layers, args.dtype)
        model = "small random Qwen3" if args.quick else f"{args.layers}-layer Qwen3-0.6B-shaped model"
        result = restart_ttft.measure(folder, args.restart_tokens, args.runs, log)
    row = (
        f"Time to first token reopening a {result.prompt_tokens:,}-token chat after a restart (fresh "
        f"process; ours: {result.restored_cached_tokens:,} tokens restored from the prompt cache on "
        f"disk; other column: the same engine re-prefilling it, as mlx-lm would)",
        f"{result.restored_ttft_s:.2f} s", f"{result.cold_ttft_s:.2f} s",
        f"{result.speedup:.1f}x faster", ">= 20x",
    )
    table = "\n".join([
        "| Measure | Qwen Desk | Re-prefilled | Ratio | Target |",
        "|---|---|---|---|---|",
        f"| {' | '.join(row)} |",
        "",
        f"- Restart: {model}; each side is a new Python process "
        f"that loads the model and answers the chat's next turn ({args.runs} run(s) each, alternating).",
    ])
    return Section(table, {"restart_ttft_speedup": round(result.speedup, 2)}, {})


def app_path_section(args: argparse.Namespace, command: str) -> Section:
    """Tokens/s reaching the transcript (real window offscreen, real worker) vs the engine alone."""
    tokens = min(args.app_tokens, 300) if args.quick else args.app_tokens
    runs = 2 if args.quick else max(args.runs, 3)
    app_path.qt_app()
    with tempfile.TemporaryDirectory(prefix="qwen-desk-bench-app-") as tmp:
        folder = app_path.fast_checkpoint(Path(tmp))
        engine = Engine.load(folder)
        result = app_path.measure(folder, engine, tokens, runs, log)
        del engine
    costs = app_path.render_costs()
    app_tps, engine_tps = statistics.median(result.app_tps), statistics.median(result.engine_tps)
    rows = [
        (
            f"Tokens/s delivered to the transcript ({result.tokens} tokens; offscreen Qt, real "
            f"worker thread, signals and rendering) vs the engine alone",
            f"{app_tps:.1f}", f"{engine_tps:.1f} (engine alone)", f"{result.ratio:.3f}", ">= 0.97",
        ),
        *app_path.render_cost_rows(costs),
    ]
    table = "\n".join([
        "| Measure | The app | Reference | Ratio | Target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        f"- App path: a small random Qwen3 (the engine at full speed, so the app's share per token "
        f"is largest); medians of {runs} alternating runs per side after a warm-up. Render rows: "
        f"one streaming update of the message view (only the open chunk is rendered again) vs "
        f"rendering the whole answer, as every update did before.",
    ])
    return Section(table, {"app_path_ratio": round(result.ratio, 3)}, {})


SECTIONS.update(restart=restart_section, app_path=app_path_section)


def run_hybrid(args: argparse.Namespace, command: str) -> str:
    """The Qwen3.5-shaped rows (bench/hybrid.py), in a table of their own."""
    if args.quick:
        args.hybrid_runs, args.hybrid_prefill_tokens, args.hybrid_decode_tokens = 1, 48, 4
        args.hybrid_user_tokens, args.hybrid_reply_tokens = 16, 4
    if not hybrid.available():
        return "Hybrid rows skipped: the shared Qwen3.5-family fixtures (248K tokenizer) are missing."
    results = [
        hybrid.measure(spec, args, run_ours, run_mlx_lm, alternate, user_text, chat_request, log)
        for spec in hybrid.hybrid_models(args)
    ]
    lines = [
        f"Qwen Desk engine vs mlx-lm {getattr(mlx_lm, '__version__', '?')} on hybrid Qwen3.5 "
        f"shapes (MLX {mx.__version__}, {mx.default_device()}, {platform.machine()}): random-weight "
        f"4-bit models, reduced depth (see the notes); greedy; medians of alternating runs after "
        f"a warm-up.",
        "",
        "| Measure | Qwen Desk | mlx-lm | Ours / mlx-lm | Target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for result in results for row in hybrid.rows(result, args.turns)),
        "",
        *hybrid.notes(results, args),
        f"- Command: `{command}`",
    ]
    return "\n".join(lines)


def run_qwen3(args: argparse.Namespace, command: str) -> Section:
    """The Qwen3-0.6B-shaped rows."""
    metal = mx.metal.is_available()
    if args.layers is None:
        args.layers = 28 if metal else 2
    if args.dtype is None:
        args.dtype = "bfloat16" if metal else "float32"
    if args.quick:
        args.layers, args.runs, args.decode_runs = min(args.layers, 2), 1, 1
        args.decode_tokens, args.prefill_tokens = min(args.decode_tokens, 8), min(args.prefill_tokens, 128)
        args.user_tokens, args.reply_tokens = min(args.user_tokens, 48), min(args.reply_tokens, 4)
    with tempfile.TemporaryDirectory(prefix="qwen-desk-bench-") as tmp:
        log(f"writing a random {args.layers}-layer Qwen3-0.6B-shaped checkpoint ({args.dtype}), quantizing to 4 bits")
        folder = build_checkpoint(Path(tmp), args.layers, args.dtype)
        engine = Engine.load(folder)
        theirs_model, theirs_tokenizer = mlx_lm.load(str(folder))
        weights = model_nbytes(engine.model)
        theirs_weights = model_nbytes(theirs_model)

        log("warm-up")
        warm = chat_request([ChatMessage("user", "Hello there.")], 2)
        warm_ids = engine.prepare(warm).prompt
        run_ours(engine, warm)
        run_mlx_lm(theirs_model, theirs_tokenizer, warm_ids, 2)

        log("decode")
        question = chat_request([ChatMessage("user", user_text(engine, 48, 0))], args.decode_tokens)
        question_ids = engine.prepare(question).prompt
        dec_ours, dec_theirs = alternate(
            args.decode_runs,
            lambda: run_ours(engine, question),
            lambda: run_mlx_lm(theirs_model, theirs_tokenizer, question_ids, args.decode_tokens),
        )

        log(f"prefill (~{args.prefill_tokens} tokens)")
        long_request = chat_request([ChatMessage("user", user_text(engine, args.prefill_tokens - 14, 1))], 1)
        long_ids = engine.prepare(long_request).prompt
        pre_ours, pre_theirs = alternate(
            args.runs,
            lambda: run_ours(engine, long_request),
            lambda: run_mlx_lm(theirs_model, theirs_tokenizer, long_ids, 1),
        )

        log(f"{args.turns}-turn chat")
        chat = multi_turn(engine, theirs_model, theirs_tokenizer, args)

        log("memory bandwidth")
        bandwidth = memory_bandwidth()

    median = statistics.median
    dec_o, dec_t = median(t.decode_tps for t in dec_ours), median(t.decode_tps for t in dec_theirs)
    pre_o = median(len(long_ids) / t.ttft_s for t in pre_ours)
    pre_t = median(len(long_ids) / t.ttft_s for t in pre_theirs)
    chat_o, chat_t = median(t.ttft_s for t in chat.reencoded), median(t.ttft_s for t in chat.theirs)
    chat_p = median(t.ttft_s for t in chat.prefix_only)
    peak_o = weights + max(t.peak_bytes for t in dec_ours + pre_ours)
    peak_t = theirs_weights + max(t.peak_bytes for t in dec_theirs + pre_theirs)
    ceiling = bandwidth / weights
    rows = [
        ("Decode tokens/s", f"{dec_o:.2f}", f"{dec_t:.2f}", f"{dec_o / dec_t:.3f}", ">= 0.98"),
        (
            f"Prefill tokens/s ({len(long_ids):,}-token prompt)",
            f"{pre_o:.1f}", f"{pre_t:.1f}", f"{pre_o / pre_t:.3f}", ">= 0.98",
        ),
        (
            f"Turn-{args.turns} time to first token, {chat.prompt_tokens:,}-token chat (ours: prompt "
            f"cache, {chat.reencoded_cached:,} tokens reused; mlx-lm: prefills everything)",
            f"{chat_o:.2f} s", f"{chat_t:.2f} s", f"{chat_t / chat_o:.2f}x faster", ">= 5x",
        ),
        (
            f"  the same with common-prefix reuse only (no reply re-encoding: "
            f"{chat.prefix_cached:,} tokens reused)",
            f"{chat_p:.2f} s", f"{chat_t:.2f} s", f"{chat_t / chat_p:.2f}x faster", "",
        ),
        (
            "Peak memory (weights + highest allocation while running)",
            f"{peak_o / 1e6:.0f} MB", f"{peak_t / 1e6:.0f} MB", f"{peak_o / peak_t:.3f}", "<= 1.05",
        ),
        (
            f"Decode vs the bandwidth ceiling ({ceiling:.1f} tokens/s)",
            f"{dec_o / ceiling:.1%}", f"{dec_t / ceiling:.1%}", "", "",
        ),
    ]
    table = render_table(rows, args, weights, bandwidth, question_ids, dec_ours, dec_theirs, chat, command)
    figures = {
        "decode_ratio": round(dec_o / dec_t, 4),
        "prefill_ratio": round(pre_o / pre_t, 4),
        "turn5_ttft_speedup": round(chat_t / chat_o, 3),
        "peak_memory_ratio": round(peak_o / peak_t, 4),
    }
    notes = {}
    if args.turns != 5:
        notes["turn5_ttft_speedup"] = f"measured at turn {args.turns} (--turns)"
    return Section(table, figures, notes)


def render_table(
    rows: list[tuple[str, str, str, str, str]],
    args: argparse.Namespace,
    weights: int,
    bandwidth: float,
    question_ids: list[int],
    dec_ours: list[Timing],
    dec_theirs: list[Timing],
    chat: ChatResult,
    command: str,
) -> str:
    lines = [
        f"Qwen Desk engine vs mlx-lm {getattr(mlx_lm, '__version__', '?')} "
        f"(MLX {mx.__version__}, {mx.default_device()}, {platform.machine()}): random-weight 4-bit "
        f"model with Qwen3-0.6B's shapes, {args.layers} of its 28 layers, {args.dtype} scales, "
        f"{weights / 1e6:.0f} MB of weights; greedy; medians of alternating runs after a warm-up "
        f"({args.decode_runs} decode, {args.runs} prefill and chat runs per side).",
        "",
        "| Measure | Qwen Desk | mlx-lm | Ours / mlx-lm | Target |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
        f"- Decode: {len(question_ids)}-token prompt, {dec_ours[0].tokens} (ours) / "
        f"{dec_theirs[0].tokens} (mlx-lm) generated tokens per run.",
        f"- Chat: {args.turns} turns of a {args.user_tokens}-token message and a reply of up to "
        f"{args.reply_tokens} tokens (sampled; {', '.join(map(str, chat.reply_tokens))} tokens as "
        f"text in the history). Qwen3's template drops the (here empty) think block "
        f"from earlier replies, so plain prefix reuse must prefill the last reply again; our "
        f"engine re-encodes each reply that way right after its Finished event, while the user "
        f"reads ({chat.reencode_s:.2f} s for the last one), so the next turn prefills only the "
        f"new message.",
        f"- Ceiling: {bandwidth / 1e9:.1f} GB/s (256 MiB array read + write) over "
        f"{weights / 1e6:.0f} MB of weights read per token.",
        f"- Command: `{command}`",
    ]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Qwen Desk's engine vs plain mlx-lm, side by side (from a source checkout: "
        "it writes its model with tests/support; also `make bench`).",
    )
    add_arguments(parser)
    return run_benchmark(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
