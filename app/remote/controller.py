"""Starts, watches and stops one group of Macs serving a model: ``qwen-desk serve --hosts``.

``GroupController.start(model, hosts)`` runs the server as a child process on a free loopback
port with a fresh API key, waits (off the GUI thread, bounded) until ``/v1/models`` answers,
then emits ``ready`` with a connected ``RemoteEngine``. A group that fails to start emits
``failed``; one that stops later (a rank died: the watchdog ends the group) emits ``ended``,
both with the group's own last words. ``stop`` is bounded. Signals are emitted on the starting
and watching threads and reach GUI-thread slots queued.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence

from PySide6.QtCore import QObject, Signal

from mlx_backend.errors import QwenDeskError
from mlx_backend.remote import RemoteEngine, ServerProcess
from mlx_backend.remote.process import serve_command

log = logging.getLogger(__name__)

# Loading a model that needs several Macs means reading 100+ GB on each: minutes, not seconds.
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 5.0

State = Literal["idle", "starting", "running"]


@dataclass(frozen=True)
class GroupSpec:
    """What to run where: the model (folder or repo id, the same on every Mac) and the host file."""

    model: str
    hosts_file: str
    hosts: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{len(self.hosts)} Mac" + ("" if len(self.hosts) == 1 else "s")


def group_command(spec: GroupSpec, port: int, api_key: str) -> list[str]:
    """The group's server, as ``qwen-desk serve`` takes it (rank 0 serves; loopback only)."""
    return serve_command(
        "--hosts", spec.hosts_file, "--model", spec.model,
        "--host", "127.0.0.1", "--port", str(port), "--api-key", api_key,
    )


CommandBuilder = Callable[[GroupSpec, int, str], Sequence[str]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GroupController(QObject):
    # A line for the window while it starts ("Starting the group on 2 Macs…", then its own).
    progress = Signal(str)
    ready = Signal(object)  # RemoteEngine
    failed = Signal(str)  # it did not start
    ended = Signal(str)  # it was running and stopped by itself
    stateChanged = Signal(str)
    # From the starting/watching threads (run number, payload), handled on the GUI thread.
    _started = Signal(int, object)
    _start_failed = Signal(int, str)
    _stopped_itself = Signal(int, str)
    _line = Signal(int, str)

    def __init__(
        self,
        *,
        command_builder: CommandBuilder = group_command,
        start_timeout_s: float = START_TIMEOUT_S,
        env: Optional[dict[str, str]] = None,
        parent: Optional[QObject] = None,
    ) -> None:
        super().__init__(parent)
        self._command_builder = command_builder
        self._start_timeout_s = start_timeout_s
        self._env = env
        self._process: Optional[ServerProcess] = None
        self._cancel = threading.Event()
        self.spec: Optional[GroupSpec] = None
        self.state: State = "idle"
        self._run = 0
        self._started.connect(self._on_started)
        self._start_failed.connect(self._on_start_failed)
        self._stopped_itself.connect(self._on_stopped_itself)
        self._line.connect(self._on_line)

    @property
    def name(self) -> str:
        """The model's name in the window: "Qwen3.5-397B-A17B on 3 Macs"."""
        if self.spec is None:
            return ""
        base = self.spec.model.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
        return f"{base} on {self.spec.where}"

    def start(self, spec: GroupSpec) -> None:
        if self.state != "idle":
            raise QwenDeskError("A group is already running: stop it first.")
        self.spec = spec
        self._run += 1
        self._cancel = threading.Event()
        port, key = free_port(), secrets.token_urlsafe(24)
        process = ServerProcess(self._command_builder(spec, port, key), env=self._env or dict(os.environ))
        self._process = process
        self._set_state("starting")
        self.progress.emit(f"Starting the group on {spec.where}\u2026")
        threading.Thread(target=self._start, args=(self._run, process, spec, port, key, self._cancel), name="group-start", daemon=True).start()

    def _start(self, run: int, process: ServerProcess, spec: GroupSpec, port: int, key: str, cancel: threading.Event) -> None:
        """Starting thread: no widget touched, only signals emitted."""
        url = f"http://127.0.0.1:{port}"
        last = [""]

        def cancelled() -> bool:
            line = process.last_line()
            if line and line != last[0]:
                last[0] = line
                self._line.emit(run, line)  # "Loading…", download progress, rank start-up
            return cancel.is_set()

        try:
            process.start()
            process.wait_ready(url, key, timeout_s=self._start_timeout_s, cancelled=cancelled)
            engine = RemoteEngine.connect(url, api_key=key, where=spec.where, process=process)
        except QwenDeskError as error:
            process.stop(STOP_TIMEOUT_S)
            self._start_failed.emit(run, f"The group on {spec.where} did not start. {error}")
            return
        if cancel.is_set():
            process.stop(STOP_TIMEOUT_S)
            return
        self._started.emit(run, engine)
        process.wait()
        if not process.stopping:
            process.drain_stderr()
            self._stopped_itself.emit(run, f"The group on {spec.where} stopped: {process.exit_message()}")

    # GUI thread: a run the user stopped (or a later one replaced) has nothing more to say.
    def _current(self, run: int) -> bool:
        return run == self._run and not self._cancel.is_set()

    def _on_line(self, run: int, line: str) -> None:
        if self._current(run):
            self.progress.emit(line)

    def _on_started(self, run: int, engine: object) -> None:
        if self._current(run):
            self._set_state("running")
            self.ready.emit(engine)

    def _on_start_failed(self, run: int, message: str) -> None:
        if self._current(run):
            self._process = None
            self._set_state("idle")
            self.failed.emit(message)

    def _on_stopped_itself(self, run: int, message: str) -> None:
        if self._current(run):
            self._process = None
            self._set_state("idle")
            self.ended.emit(message)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop the group (waiting at most about ``timeout_s``); True once it has ended."""
        self._cancel.set()
        process, self._process = self._process, None
        stopped = process.stop(timeout_s) if process is not None else True
        if self.state != "idle":
            self._set_state("idle")
        return stopped

    def stop_in_background(self) -> None:
        """The Stop button: the same, without holding up the window."""
        process, self._process = self._process, None
        self._cancel.set()
        if self.state != "idle":
            self._set_state("idle")
        if process is not None:
            threading.Thread(target=process.stop, args=(STOP_TIMEOUT_S,), name="group-stop", daemon=True).start()

    @property
    def process(self) -> Optional[ServerProcess]:
        return self._process

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.stateChanged.emit(state)
