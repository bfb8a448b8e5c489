"""Console entry point ``qwen-desk``: no arguments opens the app, a subcommand scripts it."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and not argv[0].startswith("-psn_"):  # Finder passes -psn_… to old-style launches
        from mlx_backend.commands.cli import main as cli_main

        return cli_main(argv)
    from app.gui import run_gui  # Qt is imported only for the GUI

    return run_gui()


if __name__ == "__main__":
    sys.exit(main())
