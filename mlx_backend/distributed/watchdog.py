"""Bounded waits for a group: a rank that dies, hangs or can't be reached stops the others.

MLX's collectives can't be interrupted or given a timeout, and what the ring backend does by
itself depends on how a peer fails (measured on MLX 0.32, tests/test_distributed_faults.py):

- a peer process that ends (crash, SIGKILL, Ctrl-C): its sockets close and the waiting
  collective raises ``RuntimeError: [ring] connection to a peer was lost`` at once;
- a peer that hangs (SIGSTOP, a stuck GPU, a Mac asleep) or a cable pulled: the collective
  waits forever, as ``mx.distributed.init`` does for a host that never answers.

So every wait on the other ranks runs inside ``Watchdog.guard``: a thread of its own (MLX
releases the GIL while it waits) ends the process when the guard outlives its timeout, and a
lost connection ends it the same way (``lost``). Only ``mx.distributed.init`` holds the GIL while
it waits (MLX 0.32), so the start is bounded by a small process instead (serving.join_group). Either prints one clear line and exits with
``RANK_LOST_EXIT``, after the hooks (the server answering its clients) had a moment to run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, NoReturn, Optional

# A distinct status (EX_TEMPFAIL: "try again later") for "a rank of the group failed".
RANK_LOST_EXIT = 75
DEFAULT_RANK_TIMEOUT_S = 45.0
# Starting a group waits for every host to connect; loading waits for the slowest rank.
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_LOAD_TIMEOUT_S = 1800.0
# How long the hooks (answers to the server's clients) may take before the process ends.
HOOK_GRACE_S = 3.0

ADVICE = "the group is stopping; start it again or load a smaller model"

# What MLX's backends say when a peer's connection is gone (ring, JACCL, MPI).
_LOST_MARKERS = ("connection to a peer was lost", "closed by the peer", "[ring]", "[jaccl]", "[mpi]")


def is_lost_peer(error: BaseException | str) -> bool:
    """Whether ``error`` (or a Failed event's message) is the transport reporting a lost peer."""
    text = str(error)
    return any(marker in text for marker in _LOST_MARKERS)


def other_ranks(rank: int, size: int) -> str:
    """'rank 1 of 2', 'rank 1 or 2 of 3': who it can be, seen from ``rank`` (a collective
    doesn't say which peer is missing)."""
    others = [str(r) for r in range(size) if r != rank]
    if len(others) == 1:
        names = others[0]
    else:
        names = ", ".join(others[:-1]) + " or " + others[-1]
    return f"rank {names} of {size}"


class Watchdog:
    """Ends this process, with a clear line, when a guarded wait on the group takes too long."""

    def __init__(
        self,
        rank: int,
        size: int,
        timeout_s: float = DEFAULT_RANK_TIMEOUT_S,
        *,
        exit: Callable[[int], object] = os._exit,
        stream=None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("the rank timeout must be a positive number of seconds")
        self.rank, self.size, self.timeout_s = rank, size, timeout_s
        self._exit = exit
        self._stream = stream
        self._hooks: list[Callable[[str], None]] = []
        self._lock = threading.Condition()
        self._armed: Optional[tuple[float, float, str]] = None  # (deadline, timeout, what)
        self._failed = False
        # Set by a deliberate shutdown: a peer leaving is then expected, not a fault.
        self.stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def on_failure(self, hook: Callable[[str], None]) -> None:
        """Run ``hook(message)`` before the process ends on a fault (e.g. answer HTTP clients)."""
        self._hooks.append(hook)

    @contextmanager
    def guard(self, what: str = "stopped answering", timeout_s: Optional[float] = None) -> Iterator[None]:
        """Bound the wait inside: past ``timeout_s`` the group is declared broken. A lost peer
        raised inside (RuntimeError from the transport) ends the process the same way."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._armed = (time.monotonic() + timeout, timeout, what)
            self._lock.notify_all()
        self._start()
        try:
            yield
        except RuntimeError as error:
            if is_lost_peer(error):
                self.lost(str(error))
            raise
        finally:
            with self._lock:
                self._armed = None
                self._lock.notify_all()

    def lost(self, detail: str = "") -> NoReturn:
        """A peer's connection is gone: end the group now."""
        self.fail(
            f"{other_ranks(self.rank, self.size)} is gone (its connection closed: the process "
            f"ended or its host went away): {ADVICE}."
        )

    def fail(self, message: str) -> NoReturn:
        """Run the hooks (bounded), print ``message`` as one line, end the process."""
        with self._lock:
            first = not self._failed
            self._failed = True
        if first:
            quiet = self.stopping.is_set()
            stream = self._stream or sys.stderr
            # The line first: whatever happens to this process next, it has said why.
            if quiet:
                print(f"qwen-desk rank {self.rank}: the group stopped.", file=stream, flush=True)
            else:
                print(f"qwen-desk rank {self.rank}: {message}", file=stream, flush=True)
            self._run_hooks(message)  # an answer cut short gets its error either way
            self._exit(0 if quiet else RANK_LOST_EXIT)
        # Another thread is already ending the process: wait for it.
        while True:
            time.sleep(3600)

    def _run_hooks(self, message: str) -> None:
        def run() -> None:
            for hook in self._hooks:
                try:
                    hook(message)
                except Exception:  # noqa: BLE001 - the process ends anyway
                    pass

        runner = threading.Thread(target=run, name="rank-fault-hooks", daemon=True)
        runner.start()
        runner.join(HOOK_GRACE_S)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="rank-watchdog", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        with self._lock:
            while True:
                if self._armed is None:
                    self._lock.wait()
                    continue
                deadline, timeout, what = self._armed
                left = deadline - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                break
        self.fail(self._expired_message(what, timeout))

    def message(self, what: str, timeout: float) -> str:
        return self._expired_message(what, timeout)

    def _expired_message(self, what: str, timeout: float) -> str:
        seconds = f"{timeout:g} s"
        return f"{other_ranks(self.rank, self.size)} {what} (no reply for {seconds}): {ADVICE}."
