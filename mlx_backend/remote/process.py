"""A ``qwen-desk serve`` (one process, or ``--hosts`` for an mlx.launch group) as a child process.

It gets its own process group, so stopping it reaches whatever it started (mlx.launch's ranks,
ssh); its stderr is read on a thread and the last lines kept, because when a group fails its
last line says why ("rank 1 stopped answering"). ``wait_ready`` polls ``GET /v1/models`` until
the model is served, bounded, and gives up at once if the process ends.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Sequence

import httpx2

from mlx_backend.errors import QwenDeskError

# Lines of stderr kept for messages.
TAIL_LINES = 40
# A poll of /v1/models: a server that takes the port before its model loads accepts the
# connection but answers only once serving, so each poll is short and simply retried.
POLL_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.3


def serve_command(*args: str) -> list[str]:
    """``qwen-desk serve ARGS`` with this Python (or this app bundle's executable)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "serve", *args]
    return [sys.executable, "-m", "app.main", "serve", *args]


class ServerProcess:
    """One server child process. Thread-safe: a GUI thread may stop it while another waits."""

    def __init__(self, command: Sequence[str], *, env: Optional[dict[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.command = list(command)
        self._env = env
        self._cwd = cwd
        self._process: Optional[subprocess.Popen] = None
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: Optional[threading.Thread] = None

    # ------------------------------------------------------------ running
    def start(self) -> None:
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                bufsize=1,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,  # its own process group: stop() reaches all it started
            )
        except OSError as error:
            raise QwenDeskError(f"Could not start {self.command[0]}: {error.strerror or error}.") from None
        self._reader = threading.Thread(target=self._read_stderr, name="server-stderr", daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            # Progress bars redraw with \r: the text after the last one is what shows.
            text = line.rstrip("\n").rsplit("\r", 1)[-1].strip()
            if text:
                with self._lock:
                    self._tail.append(text)

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self._process.poll() if self._process else None

    @property
    def stopping(self) -> bool:
        """``stop`` was called: an end now is the user's, not a failure."""
        return self._stopping.is_set()

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        with self._lock:
            return list(self._tail)[-lines:]

    def last_line(self) -> str:
        """The last stderr line worth showing (tracebacks end in the exception's line)."""
        tail = self.tail()
        return tail[-1] if tail else ""

    def exit_message(self) -> str:
        """Why it ended, in one line: its last words, or its exit status."""
        line, code = self.last_line(), self.returncode
        if code is not None and code < 0:  # killed: its last line was about something else
            try:
                return f"it was stopped by {signal.Signals(-code).name}"
            except ValueError:
                return f"it was stopped by signal {-code}"
        if line:
            return line
        return "it is still running" if code is None else f"it exited with status {code}"

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    # ------------------------------------------------------------ readiness
    def wait_ready(
        self,
        base_url: str,
        api_key: Optional[str],
        *,
        timeout_s: float,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> dict:
        """The server's ``/v1/models`` answer once it lists a model. Raises ``QwenDeskError`` if
        the process ends, ``timeout_s`` passes, or ``cancelled()`` turns true first."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + timeout_s
        with httpx2.Client(timeout=POLL_TIMEOUT_S, trust_env=False) as client:
            while True:
                if cancelled() or self.stopping:
                    raise QwenDeskError("Stopped before it was ready.")
                if not self.running():
                    self.drain_stderr()
                    raise QwenDeskError(f"It stopped while starting: {self.exit_message()}")
                try:
                    response = client.get(f"{base_url}/v1/models", headers=headers)
                    if response.status_code == 200 and response.json().get("data"):
                        return response.json()
                    if response.status_code in (401, 403):
                        raise QwenDeskError("The server refused this app's key.")
                except (httpx2.TransportError, ValueError):
                    pass  # not listening or not serving yet
                if time.monotonic() > deadline:
                    raise QwenDeskError(
                        f"It was not ready after {timeout_s:.0f} s"
                        + (f" (last: {self.last_line()})" if self.last_line() else "") + "."
                    )
                time.sleep(POLL_INTERVAL_S)

    def drain_stderr(self, timeout_s: float = 1.0) -> None:
        """After an exit: let the reader catch the last words (bounded: a child left behind
        may hold stderr open)."""
        if self._reader is not None:
            self._reader.join(timeout_s)

    # ------------------------------------------------------------ stopping
    def stop(self, timeout_s: float = 5.0) -> bool:
        """SIGTERM (it stops its group and closes cleanly), then SIGKILL to its whole process
        group after ``timeout_s``. True once it has ended."""
        self._stopping.set()
        process = self._process
        if process is None:
            return True
        if process.poll() is None:
            try:
                process.terminate()
            except ProcessLookupError:
                pass
            if self.wait(timeout_s) is None:
                self._kill_group()
                self.wait(2.0)
        self._kill_group()  # anything it left behind in its group (a rank, an ssh)
        return process.poll() is not None

    def _kill_group(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
