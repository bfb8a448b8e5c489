"""``qwen-desk serve`` on N local ranks (mlx.launch, ring backend on 127.0.0.1) for a test: the
leader's URL, every rank's pid and JSON lines, and its own ring ports (tests run side by side)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from tests.support.launch import REPO, RANK_SCRIPTS, mlx_launch

_SERVING = re.compile(r"Serving .* at (http://127\.0\.0\.1:\d+)/v1")


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (the ring's, one per rank)."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class GroupProcess:
    """A command whose stdout and stderr lines are collected as they come."""

    def __init__(self, command: list[str], env: Optional[dict] = None) -> None:
        environment = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        environment.update(env or {})
        self.process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_ignore_sigint,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            if self.process.poll() is not None:
                time.sleep(0.5)  # the last lines
                found = predicate()
                if found:
                    return found
                raise AssertionError(f"ended before {what}: {self.text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {what} within {timeout} s: {self.text()[-3000:]}")

    def url(self, timeout: float = 180) -> str:
        def serving():
            for line in self.out:
                match = _SERVING.search(line)
                if match:
                    return match.group(1)
            return None
        return self.wait_for(serving, timeout, "server")

    def reports(self) -> list[dict]:
        found = []
        for line in list(self.out):
            if line.startswith("{") and '"rank"' in line:
                found.append(json.loads(line))
        return found

    def pids(self) -> dict[int, int]:
        return {report["rank"]: report["pid"] for report in self.reports() if "pid" in report}

    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def close(self) -> None:
        """Whatever is left of the group ends (a stopped rank is continued to die)."""
        if self.process.poll() is None:
            self.signal_group(signal.SIGCONT)
            self.signal_group(signal.SIGKILL)
        for pid in self.pids().values():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.wait(timeout=30)


def serve_group(ranks: int, model: Path, *serve_args: str) -> GroupProcess:
    """mlx.launch -n ranks serve_rank.py --model model --port 0 serve_args..."""
    command = [
        mlx_launch(), "--backend", "ring", "-n", str(ranks), "--starting-port", str(free_ports(ranks)),
        "--python", sys.executable, str(RANK_SCRIPTS / "serve_rank.py"),
        "--model", str(model), "--port", "0", *serve_args,
    ]
    return GroupProcess(command)
