"""``qwen-desk serve --hosts hosts.json``: start the group with ``mlx.launch`` and watch it.

The host file is mlx.launch's own (``mlx.launch --hostfile``): a list of hosts, or an object
with ``hosts`` (and optionally ``backend`` and ``envs``); each host has ``ssh`` (the name to
ssh into; 127.0.0.1 runs locally) and, for the ring backend, ``ips`` (the addresses the ranks
connect on). Rank 0 is the first host: it serves HTTP, its output is relayed here.

mlx.launch itself relays every rank's output and stops the others when one exits with an
error, but it returns 0 whatever happened and waits forever on a rank that hangs; so this
reads its reports, ends the whole group (its own session) on Ctrl-C, SIGTERM or a failed
rank, and returns a failed rank's status. No MLX imports here: the checks run anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from mlx_backend.errors import QwenDeskError

# mlx.launch's default first port for the ring backend (one port per rank and IP from there).
DEFAULT_GROUP_PORT = 32323
# After a rank failed, how long mlx.launch may take to stop the others before they are killed.
STOP_GRACE_S = 10.0
KEY_ENV = "QWEN_DESK_API_KEY"

_RANK_EXIT = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")


def launched_in_group() -> bool:
    """Whether ``mlx.launch`` (or mpirun) started this process as one rank of a group."""
    return any(name in os.environ for name in ("MLX_HOSTFILE", "MLX_IBV_DEVICES", "OMPI_COMM_WORLD_SIZE"))


def read_hostfile(path: str | os.PathLike, backend: str = "ring") -> dict[str, Any]:
    """The host file's contents as mlx.launch reads them, or a QwenDeskError saying what's wrong."""
    path = Path(path)
    if not path.is_file():
        raise QwenDeskError(f"The host file {path} doesn't exist (it lists the Macs of the group, as for mlx.launch --hostfile).")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise QwenDeskError(f"The host file {path} is not a text file.") from None
    except json.JSONDecodeError as error:
        raise QwenDeskError(f"The host file {path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}.") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list):
        raise QwenDeskError(f'The host file {path} must be a list of hosts or an object with "hosts": a list of hosts.')
    if not hosts:
        raise QwenDeskError(f"The host file {path} lists no hosts: add one entry per Mac, the one that serves first.")
    backend = (data.get("backend") if isinstance(data, dict) else None) or backend
    for number, host in enumerate(hosts):
        where = f"Host {number} in {path}"
        if not isinstance(host, dict) or not isinstance(host.get("ssh"), str) or not host["ssh"].strip():
            raise QwenDeskError(f'{where} needs "ssh": the name or address to reach it by ssh (127.0.0.1 for this Mac).')
        ips = host.get("ips", [])
        if not isinstance(ips, list) or not all(isinstance(ip, str) and ip for ip in ips):
            raise QwenDeskError(f'{where} ({host["ssh"]}): "ips" must be a list of addresses.')
        if backend == "ring" and not ips:
            raise QwenDeskError(
                f'{where} ({host["ssh"]}) has no "ips": the ring backend needs the address each Mac '
                'is reached at, e.g. "ips": ["192.168.1.20"].'
            )
    if len(hosts) == 1:
        raise QwenDeskError(f"The host file {path} lists one host: a group needs two or more (for one Mac, leave out --hosts).")
    return {"hosts": hosts, "backend": backend}


def mlx_launch() -> str:
    """mlx.launch beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("mlx.launch")
    found = str(beside) if beside.exists() else shutil.which("mlx.launch")
    if not found:
        raise QwenDeskError("mlx.launch was not found (it comes with MLX: pip install mlx).")
    return found


def group_command(hostfile: str | os.PathLike, serve_argv: Sequence[str], *, backend: str,
                  group_port: int = DEFAULT_GROUP_PORT, python: Optional[str] = None) -> list[str]:
    """The mlx.launch command that runs ``qwen-desk serve serve_argv`` on every host."""
    return [
        mlx_launch(), "--hostfile", str(hostfile), "--backend", backend, "--starting-port", str(group_port),
        "--", python or sys.executable, "-m", "mlx_backend.distributed.launcher", "serve", *serve_argv,
    ]


def serve_group(hostfile: str | os.PathLike, serve_argv: Sequence[str], *, api_key: Optional[str] = None,
                group_port: int = DEFAULT_GROUP_PORT) -> int:
    """Run the group until it ends, Ctrl-C or SIGTERM; the status of a failed rank, else 0."""
    settings = read_hostfile(hostfile)
    hosts = settings["hosts"]
    command = group_command(hostfile, serve_argv, backend=settings["backend"], group_port=group_port)
    environment = dict(os.environ)
    if api_key:
        environment[KEY_ENV] = api_key  # rank 0 reads it there (not in any command line)
    print(f"Starting a group of {len(hosts)} on {', '.join(h['ssh'] for h in hosts)}...", file=sys.stderr, flush=True)
    # Its own session: a stop ends mlx.launch and its local ranks together. Its stdin is a pipe
    # we never write (mlx.launch polls stdin; /dev/null would make it spin).
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, start_new_session=True,
        preexec_fn=_ignore_sigint,
    )
    watch = _GroupWatch(process, hosts)
    previous = {sig: signal.signal(sig, watch.stop_on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return watch.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_sigint() -> None:
    # Inherited by the ranks: only rank 0's server (uvicorn's own handler) acts on SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _GroupWatch:
    def __init__(self, process: subprocess.Popen, hosts: list[dict[str, Any]]) -> None:
        self.process = process
        self.hosts = hosts
        self.failures: list[tuple[int, str]] = []
        # When the group started to end (a stop asked, a rank failed): the clock for escalating.
        self._since: Optional[float] = None
        self.stopping = False

    def stop_on_signal(self, _signum, _frame) -> None:
        if not self.stopping:
            self.stopping = True
            print("Stopping the group...", file=sys.stderr, flush=True)
            # SIGINT is "stop" to rank 0 (it tells the followers); mlx.launch ignores it.
            self._signal_group(signal.SIGINT)
            self._since = self._since or time.monotonic()

    def run(self) -> int:
        reader = threading.Thread(target=self._relay, name="group-stderr", daemon=True)
        reader.start()
        escalated = 0
        while self.process.poll() is None:
            time.sleep(0.2)
            if self._since is None or time.monotonic() - self._since < STOP_GRACE_S * (escalated + 1):
                continue
            # mlx.launch waits forever on a hung rank (stopped, asleep): end the group ourselves.
            escalated += 1
            if escalated == 1:
                self._signal_group(signal.SIGTERM)
            else:
                self._signal_group(signal.SIGCONT)
                self._signal_group(signal.SIGKILL)
                break
        self.process.wait()
        reader.join(timeout=2)
        if self.failures and not self.stopping:
            for rank, what in self.failures:
                host = self.hosts[rank]["ssh"] if rank < len(self.hosts) else "?"
                print(f"qwen-desk: rank {rank} ({host}) {what}.", file=sys.stderr, flush=True)
            return _status(self.failures)
        return 0 if self.stopping else (self.process.returncode or 0)

    def _relay(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            sys.stderr.write(line)
            sys.stderr.flush()
            found = _RANK_EXIT.search(line)
            if found:
                code = found.group(2)
                what = f"exited with code {code}" if code is not None else "was stopped"
                self.failures.append((int(found.group(1)), what))
                # mlx.launch stops the other ranks itself; past the grace period we do.
                self._since = self._since or time.monotonic()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _status(failures: list[tuple[int, str]]) -> int:
    from mlx_backend.distributed.watchdog import RANK_LOST_EXIT

    for _rank, what in failures:
        code = what.rsplit(" ", 1)[-1]
        if code.lstrip("-").isdigit() and int(code) > 0:
            return int(code)
    return RANK_LOST_EXIT


if __name__ == "__main__":  # what each rank runs: python -m mlx_backend.distributed.launcher serve ...
    from mlx_backend.commands.cli import main

    sys.exit(main(sys.argv[1:]))
