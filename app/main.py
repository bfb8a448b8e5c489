"""Console entry point ``qwen-desk``: no arguments opens the app, a subcommand scripts it,
and files (``qwen-desk report.pdf``) open in the app, the running one if there is one."""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    arguments = [a for a in argv if not a.startswith("-psn_")]  # Finder passes -psn_… to old-style launches
    # Only existing files open the app; anything else is a subcommand (argparse explains typos).
    from mlx_backend.commands.cli import COMMANDS

    if arguments and (arguments[0] in COMMANDS or not all(Path(a).expanduser().exists() for a in arguments)):
        from mlx_backend.commands.cli import main as cli_main

        return cli_main(arguments)
    from app.gui import run_gui  # Qt is imported only for the GUI

    files = [str(Path(a).expanduser().resolve()) for a in arguments]
    return run_gui(sys.argv[:1], files=files)


if __name__ == "__main__":
    sys.exit(main())
