"""``qwen-desk SUBCOMMAND ...``: the scripting side of the app (no Qt imported here).

Each subcommand lives in ``mlx_backend/commands/<name>.py`` with ``add_parser(subparsers)``
and ``run(args) -> int``; this module only dispatches and turns user-facing errors into
one clear line on stderr instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mlx_backend.errors import QwenDeskError

# The benchmark is not here: it needs a source checkout (python bench/run.py, make bench).
COMMANDS = ("generate", "convert", "summarize", "serve", "mcp", "self-check")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-desk",
        description="Qwen Desk: run Qwen3 locally on MLX. Without a subcommand, opens the app.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"mlx_backend.commands.{name.replace('-', '_')}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except QwenDeskError as error:
        print(f"qwen-desk: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qwen-desk: interrupted", file=sys.stderr)
        return 130
