"""mlx_backend never imports Qt: every one of its modules imports in a process without PySide6."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import REPO_ROOT

PROBE = """
import importlib, json, pkgutil, sys
import mlx_backend
names = ["mlx_backend"] + [m.name for m in pkgutil.walk_packages(mlx_backend.__path__, "mlx_backend.")]
for name in names:
    importlib.import_module(name)
qt = sorted(m for m in sys.modules if m == "PySide6" or m.startswith(("PySide6.", "shiboken6")))
print(json.dumps({"modules": names, "qt": qt}))
"""


def test_no_backend_module_imports_pyside6():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The walk really covered the sub-packages (a broken walk would pass vacuously).
    assert "mlx_backend.generation.engine" in report["modules"]
    assert "mlx_backend.commands.cli" in report["modules"]
    assert report["qt"] == []
