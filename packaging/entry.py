"""PyInstaller entry point: the frozen ``Qwen Desk`` / ``qwen-desk`` runs the same main as pip's."""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
