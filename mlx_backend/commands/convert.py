"""``qwen-desk convert SRC DST --bits 4|8``: quantize a bf16 Qwen model for MLX (Qwen3, and the
hybrid Qwen3.5 / 3.6 / 3.8 and Qwen3-Next, from their Hugging Face or mlx-lm folders)."""

from __future__ import annotations

import argparse

from mlx_backend.loading.quantize import DTYPES, SUPPORTED_GROUP_SIZES, convert


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="quantize a bf16 Qwen model to 4 or 8 bits",
        description="Quantize a Qwen3, Qwen3.5 / 3.6 / 3.8 or Qwen3-Next model (local folder or "
        "Hugging Face repo id) into an MLX folder that Qwen Desk and mlx-lm both load. The "
        "vision tower of a multimodal checkpoint is left out; MoE routers stay at 8 bits.",
    )
    parser.add_argument("src", help="model folder or Hugging Face repo id (bf16 or fp32)")
    parser.add_argument("dst", help="new folder to write the quantized model to")
    parser.add_argument("--bits", type=int, choices=(4, 8), required=True)
    parser.add_argument(
        "--group-size", type=int, default=64, choices=SUPPORTED_GROUP_SIZES,
        help="weights sharing one scale (default 64)",
    )
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None,
        help="dtype of scales and unquantized weights (default: the source's)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    dst = convert(args.src, args.dst, bits=args.bits, group_size=args.group_size, dtype=args.dtype)
    size = sum(p.stat().st_size for p in dst.glob("*.safetensors"))
    print(f"Wrote {dst}: {args.bits}-bit, {size / 2**20:.1f} MiB of weights.")
    return 0
