"""``qwen-desk self-check``: one small MLX operation on the device models run on.

The macOS workflow runs it in the frozen app (``--require-gpu``), so a bundle whose Metal
library MLX can't load fails the build instead of a user's first answer."""

from __future__ import annotations

import argparse
import json
import sys

from mlx_backend.selfcheck import run_self_check


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "self-check",
        help="check that MLX can compute here (the GPU on a Mac)",
        description="Run one small MLX operation on the GPU (macOS) or the default device "
        "(elsewhere) and report where it ran. Exit status 2 with the reason if it can't.",
    )
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument("--require-gpu", dest="require_gpu", action="store_true", default=None,
                     help="fail unless the Metal GPU runs it (the default on macOS)")
    gpu.add_argument("--any-device", dest="require_gpu", action="store_false",
                     help="run on MLX's default device, whatever it is")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    report = run_self_check(require_gpu=args.require_gpu)
    if args.json:
        print(json.dumps(report.as_dict(), sort_keys=True))
    else:
        extra = "".join(f", {key} {value}" for key, value in report.details.items())
        print(f"MLX {report.mlx_version}: ok on the {report.device}{extra}")
    sys.stdout.flush()
    return 0
