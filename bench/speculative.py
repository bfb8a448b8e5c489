"""Speculative decoding rows of the benchmark: ours vs plain mlx-lm vs mlx-lm's draft_model path,
and prompt lookup on a document question, each with its acceptance rate.

Random weights agree on almost nothing, so the pairs are built to a known agreement
(tests/support/draft_pairs.py): the target is the draft plus extra layers whose output
projections are zero (they cost a real layer's time but predict exactly what the draft does:
acceptance 100%), or the same with a share of another random head blended into the target's
(partial agreement), or an unrelated random target (hardly any). Speed is reported against the
measured acceptance, pair by pair, not as one number.

MTP rows: a Qwen3.5 dense checkpoint with an MTP layer, built to a known agreement
(tests/support/hybrid_checkpoints.make_mtp_agree): every target layer silenced, so its next
token is a fixed function of the current one, and an MTP that computes exactly that function
of the next token (acceptance 100%), or with a random matrix blended into its fc (partial).
Ours with the MTP drafting against ours plain, on the same loaded model.

Prompt lookup needs an answer that quotes its prompt, which random weights never write: the
target's logits are forced to a reply (tests/support/draft_pairs.QuotingModel) that is a
sentence of the document, or half quote and half new words; the forcing costs both sides alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import mlx.core as mx
import mlx_lm
from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_sampler

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished, SamplingParams
from mlx_backend.events import GenerationStats
from tests.support.draft_pairs import QuotingModel, agree_with, load_pair, write_pair

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
# Qwen3-0.6B's layer shape at half width, so a 2-core CPU gets through the runs in minutes.
SHAPE = dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=64, intermediate_size=1536)
MLX_LM_DRAFT = 3  # mlx-lm's num_draft_tokens (its generate CLI's default)
QUESTION = "Tell me a long story about a lighthouse keeper and the winter storm."
DOCUMENT = (
    "The lighthouse keeper kept a logbook of every ship that passed the rocks at night. "
    "In the winter of the great storm he wrote that the lamp burned for nine days without rest, "
    "and that the fishermen of the harbour brought him bread and oil in small boats every morning. "
    "When the storm ended the mayor gave him a silver medal, a new coat and a letter of thanks "
    "from the harbour master, which he kept in the logbook until the end of his life. "
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec-extra-layers", type=int, default=14,
                        help="speculative rows: target layers beyond the 2-layer draft (default 14)")
    parser.add_argument("--spec-tokens", type=int, default=96, help="speculative rows: tokens per answer")
    parser.add_argument("--spec-runs", type=int, default=3, help="speculative rows: runs per side (median)")


@dataclass
class Run:
    tps: float
    tokens: int
    drafted: int = 0
    accepted: int = 0
    fell_back: bool = False


def ours(engine: Engine, request: ChatRequest) -> Run:
    stats: Optional[GenerationStats] = None
    for event in engine.stream(request):
        if isinstance(event, Finished):
            stats = event.stats
    return Run(stats.generation_tps, stats.generation_tokens, stats.drafted_tokens,
               stats.accepted_tokens, stats.speculative_fell_back)


def theirs(model, tokenizer, prompt: list[int], max_tokens: int, draft=None) -> Run:
    """mlx-lm's stream_generate, plain or with its draft_model path; timed like ours."""
    options = dict(draft_model=draft, num_draft_tokens=MLX_LM_DRAFT) if draft is not None else {}
    first = end = None
    tokens = from_draft = 0
    for response in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens,
                                    sampler=make_sampler(temp=0.0), **options):
        end = time.perf_counter()
        first = first or end
        tokens = response.generation_tokens
        from_draft += bool(response.from_draft)
    # Each verify step ends with one target token after up to MLX_LM_DRAFT drafted ones.
    drafted = (tokens - from_draft) * MLX_LM_DRAFT if draft is not None else 0
    tps = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return Run(tps, tokens, drafted, from_draft)


def median_run(runs: list[Run]) -> Run:
    tps = statistics.median(r.tps for r in runs)
    return Run(tps, runs[0].tokens, sum(r.drafted for r in runs), sum(r.accepted for r in runs),
               any(r.fell_back for r in runs))


def measure(runs: int, sides: dict[str, Callable[[], Run]]) -> dict[str, Run]:
    """One warm-up each, then runs rotating the order of the sides (drift hits all alike)."""
    for side in sides.values():
        side()
    results: dict[str, list[Run]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(runs):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            results[name].append(sides[name]())
    return {name: median_run(rs) for name, rs in results.items()}


def rate(run: Run) -> str:
    return f"{run.accepted / run.drafted:.0%}" if run.drafted else "-"


def run(args: argparse.Namespace, command: str, log: Callable[[str], None]) -> tuple[str, dict[str, float]]:
    """The table, and the ``--json`` figures of the fully agreeing pair (ours speculative over
    plain mlx-lm, and over mlx-lm's own draft_model path)."""
    extra, tokens, runs = args.spec_extra_layers, args.spec_tokens, args.spec_runs
    if args.quick:
        extra, tokens, runs = min(extra, 2), min(tokens, 16), 1
    rows: list[str] = []
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qwen-desk-spec-") as tmp:
        draft_path, target_path = write_pair(Path(tmp), draft_layers=2, extra_layers=extra, **SHAPE)
        request = ChatRequest(messages=(ChatMessage("user", QUESTION),), enable_thinking=False,
                              sampling=GREEDY, max_tokens=tokens)
        for label, mix in (("draft + silent layers", 0.0), ("blended head 30%", 0.3),
                           ("blended head 60%", 0.6), ("unrelated random target", None)):
            log(f"speculative: {label}")
            target, tokenizer, draft, draft_tokenizer = load_pair(draft_path, target_path, mix=mix or 0.0)
            their_target, their_tokenizer = mlx_lm.load(str(target_path))
            their_draft, _ = mlx_lm.load(str(draft_path))
            if mix is not None:
                agree_with(their_target, their_draft, mix=mix)
            else:  # our load_pair made it agree; take the unrelated weights again
                target, tokenizer = _load(target_path)
            plain = Engine(target, tokenizer)
            spec = Engine(target, tokenizer, draft_model=draft, draft_tokenizer=draft_tokenizer)
            prompt = plain.prepare(request).prompt
            result = measure(runs, {
                "mlx": lambda: theirs(their_target, their_tokenizer, prompt, tokens),
                "ours": lambda: ours(plain, request),
                "mlx_spec": lambda: theirs(their_target, their_tokenizer, prompt, tokens, their_draft),
                "ours_spec": lambda: ours(spec, request),
            })
            rows.append(_row(label, result))
            if mix == 0.0:
                figures = {
                    "speculative_speedup": round(result["ours_spec"].tps / result["mlx"].tps, 3),
                    "speculative_vs_mlx_lm": round(result["ours_spec"].tps / result["mlx_spec"].tps, 3),
                }
            log(rows[-1])  # each row as soon as it is measured: a long run shows progress
        log("prompt lookup")
        target, tokenizer = _load(target_path)
        for label, reply in (("answer quotes the document", DOCUMENT.split(". ")[1] + ". " + DOCUMENT.split(". ")[2]),
                             ("half quote, half new words", DOCUMENT.split(". ")[1] + ". Then the sea "
                              "turned green and quiet, and nobody in the village spoke of it again.")):
            model = QuotingModel(target, tokenizer.encode(reply)[:tokens], tokenizer.token_to_id("<|im_end|>"))
            engine = Engine(model, tokenizer)
            question = ChatRequest(
                messages=(ChatMessage("user", DOCUMENT * 3 + "\nWhat did the keeper write about the storm?"),),
                enable_thinking=False, sampling=GREEDY, max_tokens=tokens,
            )
            model.prompt_length = len(engine.prepare(question).prompt)
            result = measure(runs, {
                "ours": lambda: ours(engine, _with(question, prompt_lookup="off")),
                "ours_spec": lambda: ours(engine, _with(question, prompt_lookup="on")),
            })
            rows.append(_lookup_row(label, result))
            log(rows[-1])
        mtp_rows, mtp_figures = _mtp_rows(Path(tmp), tokens, runs, quick=args.quick, log=log)
        figures.update(mtp_figures)
    lines = [
        f"Speculative decoding (MLX {mx.__version__}, {mx.default_device()}): random-weight float32 "
        f"models, Qwen3-0.6B's layer shape at half width (hidden 512), a 2-layer draft and a "
        f"{2 + extra}-layer target of the tiny test tokenizer; greedy, {tokens} tokens per answer, "
        f"medians of {runs} rotated runs per side after a warm-up. Decode tokens/s.",
        "",
        "| Pair (how it agrees) | Acceptance ours / mlx-lm | Plain mlx-lm | Ours plain | mlx-lm draft_model "
        f"(k={MLX_LM_DRAFT}) | Ours speculative | Ours spec / plain mlx-lm | Ours / mlx-lm spec |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "- Targets: >= 1.5x plain decoding where acceptance >= 80%, and never below mlx-lm's own "
        "draft_model path at the same acceptance. Ours chooses the number of drafted tokens from the "
        "acceptance and falls back to plain decoding (marked 'fell back') when drafting is measured slower.",
        "- mlx-lm's acceptance is estimated: tokens it marks from_draft over (its target tokens x k).",
        "- Prompt lookup: no draft model; the answer is forced to quote the document (see bench/speculative.py).",
        f"- Command: `{command}`",
        "",
        *mtp_rows,
    ]
    return "\n".join(lines), figures


# The MTP rows' model: Qwen3.5 dense at Qwen3-0.6B's width halved, the tiny test tokenizer.
MTP_SHAPE = dict(
    hidden_size=512, intermediate_size=1536, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
    linear_num_value_heads=8, linear_num_key_heads=4, linear_key_head_dim=64, linear_value_head_dim=64,
)


def _mtp_rows(root: Path, tokens: int, runs: int, *, quick: bool, log: Callable[[str], None]):
    """Ours with the MTP drafting vs ours plain, known and partial agreement; the JSON figure
    ``mtp_speedup`` is that of the known-agreement checkpoint."""
    import math

    from mlx_backend.loading.loader import load
    from mlx_backend.models.mtp import load_mtp
    from tests.support.hybrid_checkpoints import make_mtp_agree, write_mtp_checkpoint
    from tests.support.tokenizers import write_tiny_tokenizer

    layers = 4 if quick else 16
    path = root / "mtp"
    count = write_tiny_tokenizer(path)
    write_mtp_checkpoint(path, "dense", tokenizer=False, seed=3, num_hidden_layers=layers,
                         vocab_size=64 * math.ceil(count / 64), **MTP_SHAPE)
    request = ChatRequest(messages=(ChatMessage("user", QUESTION),), enable_thinking=False,
                          sampling=GREEDY, max_tokens=tokens)
    rows, figures = [], {}
    for label, mix in (("known agreement (silent layers, pass-through fc)", 0.0),
                       ("partial agreement (fc 50% random)", 0.5)):
        log(f"mtp: {label}")
        model, tokenizer = load(path)
        mtp = load_mtp(model)
        make_mtp_agree(model, mtp, mix=mix)
        plain, spec = Engine(model, tokenizer), Engine(model, tokenizer, mtp=mtp)
        result = measure(runs, {"ours": lambda: ours(plain, request), "ours_spec": lambda: ours(spec, request)})
        r, base = result["ours_spec"], result["ours"].tps
        note = " (fell back)" if r.fell_back else ""
        rows.append(f"| {label} | {rate(r)} | {base:.1f} | {r.tps:.1f}{note} | {r.tps / base:.2f}x |")
        if mix == 0.0:
            figures["mtp_speedup"] = round(r.tps / base, 3)
        log(rows[-1])
    table = [
        f"MTP decoding: random-weight float32 Qwen3.5 dense ({layers} layers, hidden 512) with one MTP "
        f"layer, the tiny test tokenizer; greedy, {tokens} tokens, medians of {runs} rotated runs. "
        "Decode tokens/s.",
        "",
        "| Checkpoint (how the MTP agrees) | Acceptance | Ours plain | Ours MTP | MTP / plain |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "- On a CPU a forward over n tokens costs about n single steps (and the Gated DeltaNet "
        "recurrence runs token by token), so verifying drafts saves nothing there and ours falls "
        "back to plain decoding; the gain needs a memory-bound device (Apple GPU).",
    ]
    return table, figures


def _row(label: str, r: dict[str, Run]) -> str:
    base, spec, their_spec = r["mlx"].tps, r["ours_spec"], r["mlx_spec"]
    note = " (fell back)" if spec.fell_back else ""
    return (f"| {label} | {rate(spec)} / {rate(their_spec)} | {base:.1f} | {r['ours'].tps:.1f} | "
            f"{their_spec.tps:.1f} | {spec.tps:.1f}{note} | {spec.tps / base:.2f}x | "
            f"{spec.tps / their_spec.tps:.2f}x |")


def _lookup_row(label: str, r: dict[str, Run]) -> str:
    plain, spec = r["ours"].tps, r["ours_spec"]
    note = " (fell back)" if spec.fell_back else ""
    return (f"| Prompt lookup: {label} | {rate(spec)} / - | - | {plain:.1f} | - | "
            f"{spec.tps:.1f}{note} | {spec.tps / plain:.2f}x (vs ours plain) | - |")


def _load(path: Path):
    from mlx_backend.loading.loader import load

    return load(path)


def _with(request: ChatRequest, **fields) -> ChatRequest:
    from dataclasses import replace

    return replace(request, **fields)
