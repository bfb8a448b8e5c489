"""``qwen-desk bench``: our engine against plain mlx-lm, side by side (see bench/run.py).

The benchmark builds a random-weight checkpoint with the test suite's helpers, so it runs from
a source checkout only; this command finds ``bench/run.py`` beside the package and runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlx_backend.errors import QwenDeskError

REPO_ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared with ``python bench/run.py``)."""
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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the engine against plain mlx-lm (source checkout only)",
        description=(
            "Benchmark Qwen Desk's engine against mlx-lm's stream_generate on a random-weight "
            "4-bit model with Qwen3-0.6B's shapes: decode and prefill speed, multi-turn time "
            "to first token with the prompt cache, and peak memory."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    script = REPO_ROOT / "bench" / "run.py"
    if not script.is_file():
        raise QwenDeskError(
            "The benchmark needs a source checkout of Qwen Desk (bench/run.py and tests/support); "
            "it is not part of the installed app."
        )
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from bench.run import run_benchmark

    return run_benchmark(args)
