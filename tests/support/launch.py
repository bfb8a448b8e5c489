"""Run a script on N local ranks with ``mlx.launch --backend ring`` (127.0.0.1), as the
distributed tests do: each rank's stdout comes back separately (mlx.launch prefixes nothing,
so the scripts print one JSON line per rank tagged with their rank)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RANK_SCRIPTS = Path(__file__).resolve().parent / "ranks"


def mlx_launch() -> str:
    """mlx.launch beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("mlx.launch")
    return str(beside) if beside.exists() else (shutil.which("mlx.launch") or "mlx.launch")


@dataclass
class LaunchResult:
    returncode: int
    stdout: str
    stderr: str

    def reports(self) -> dict[int, dict]:
        """The JSON lines the ranks printed (``{"rank": r, ...}``), by rank."""
        found: dict[int, dict] = {}
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{") and '"rank"' in line:
                report = json.loads(line)
                found[int(report["rank"])] = report
        return found


def launch(script: str | Path, ranks: int, *args: str, timeout: float = 240, env: dict | None = None) -> LaunchResult:
    """``mlx.launch -n ranks script args...`` with this checkout first on the path."""
    script = Path(script)
    if not script.is_absolute():
        script = RANK_SCRIPTS / script
    environment = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    environment.update(env or {})
    command = [
        mlx_launch(), "--backend", "ring", "-n", str(ranks), "--python", sys.executable,
        str(script), *args,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=REPO
    )
    return LaunchResult(done.returncode, done.stdout, done.stderr)
