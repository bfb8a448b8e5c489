"""``qwen-desk serve`` on a group started by ``mlx.launch``: rank 0 serves, the others follow.

Every rank must run ``Engine.stream`` on the same request in the same order (each token and
each cancel check is a collective). Rank 0's engine thread takes each job from the server's
queue and first broadcasts it (``codec.py``); every follower waits for that broadcast, runs
the same request and drops its events. While idle, rank 0 broadcasts a heartbeat every
``HEARTBEAT_S``, so a follower tells a live idle leader from a dead one; a client that leaves
sets the job's cancel, which the engine reads as a ``GroupCancel``: every rank stops at the
same token.

Every wait on the others runs under the ``Watchdog`` (watchdog.py): a rank that dies, hangs or
can't be reached ends the group with one clear line, and rank 0 first answers its clients
with an error (the job running gets ``Failed``, queued ones a 503) so nobody waits forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
from typing import Any, Callable, Iterator, Optional

from mlx_backend.distributed.codec import HEARTBEAT, REQUEST, STOP, decode_frame, encode_frame
from mlx_backend.distributed.group import RankGroup
from mlx_backend.distributed.launcher import launched_in_group
from mlx_backend.distributed.watchdog import (
    DEFAULT_LOAD_TIMEOUT_S,
    DEFAULT_RANK_TIMEOUT_S,
    DEFAULT_START_TIMEOUT_S,
    Watchdog,
    is_lost_peer,
)
from mlx_backend.errors import QwenDeskError
from mlx_backend.events import ChatRequest, Failed, Finished
from mlx_backend.server.backend import JobEnded, Rejected, ServedModel, Sink, run_request

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0


def join_group(
    rank_timeout_s: float = DEFAULT_RANK_TIMEOUT_S, start_timeout_s: float = DEFAULT_START_TIMEOUT_S
) -> tuple[RankGroup, Optional[Watchdog]]:
    """This process's group, its connections made within ``start_timeout_s`` (a host that
    never answers ends the process with a clear line); a group of one needs no watchdog."""
    if not launched_in_group():
        return RankGroup(None), None
    rank, size = _rank_and_size_from_environment()
    watchdog = Watchdog(rank, size, rank_timeout_s)
    message = watchdog.message(
        "could not be reached (is its host on, reachable, and running the same command?)", start_timeout_s
    )
    # MLX 0.32 holds the GIL while init waits for the peers, so no thread of ours can run:
    # a small process of its own ends this one if the group isn't made in time.
    with _start_deadline(f"qwen-desk rank {rank}: {message}", start_timeout_s):
        group = RankGroup.from_environment()
    watchdog.rank, watchdog.size = group.rank, group.size
    return group, (watchdog if group.is_distributed else None)


@contextlib.contextmanager
def _start_deadline(message: str, timeout_s: float) -> Iterator[None]:
    import subprocess
    import sys

    killer = subprocess.Popen(
        [sys.executable, "-c", _KILLER, str(os.getpid()), f"{timeout_s:g}", message],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        killer.kill()
        killer.wait()


# Sleeps, then says why and ends the rank (exit status: killed by SIGKILL).
_KILLER = """
import os, signal, sys, time
time.sleep(float(sys.argv[2]))
print(sys.argv[3], file=sys.stderr, flush=True)
os.kill(int(sys.argv[1]), signal.SIGKILL)
"""


def _rank_and_size_from_environment() -> tuple[int, int]:
    """For messages before the group exists: mlx.launch's rank and the ring's host list."""
    rank = int(os.environ.get("MLX_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
    size = int(os.environ.get("OMPI_COMM_WORLD_SIZE") or 0)
    hostfile = os.environ.get("MLX_HOSTFILE")
    if not size and hostfile:
        try:
            with open(hostfile) as file:
                size = len(json.load(file))
        except (OSError, ValueError, TypeError):
            size = 0
    return rank, max(size, rank + 1, 2)


def load_for_group(path: str, group: RankGroup, progress: Optional[Callable[[int, int], None]] = None,
                   split: str = "layers") -> Any:
    """The engine for this rank: its pipeline stage (``split="layers"``: only its layers are
    read) or the whole model (``"replicas"``); the serving code above it is the same."""
    from mlx_backend import Engine

    if split not in ("layers", "replicas"):
        raise ValueError(f"split must be 'layers' or 'replicas', not {split!r}")
    # In a group the engine fixes its prefill chunks itself (every rank cuts the same ones).
    return Engine.load(path, progress=progress, group=group, pipeline=split == "layers")


def agree_started(group: RankGroup, watchdog: Optional[Watchdog], error: Optional[str],
                  timeout_s: float = DEFAULT_LOAD_TIMEOUT_S) -> list[int]:
    """Every rank says whether it is ready (loaded, listening); returns the ranks that aren't.
    Waits for the slowest rank's load, up to ``timeout_s``."""
    if not group.is_distributed:
        return [0] if error else []
    import mlx.core as mx

    mine = mx.zeros((group.size,), mx.int32)
    if error:
        mine[group.rank] = 1
    assert watchdog is not None
    with watchdog.guard(f"did not finish loading the model within {timeout_s:g} s", timeout_s):
        failed = mx.distributed.all_sum(mine, group=group.group).tolist()
    return [rank for rank, flag in enumerate(failed) if flag]


def start_failure_message(group: RankGroup, failed: list[int]) -> str:
    ranks = ", ".join(str(rank) for rank in failed)
    return (
        f"rank {ranks} of {group.size} could not start (its own message says why): the group is "
        "stopping; fix that and start it again."
    )


def _guarded(events: Iterator[object], watchdog: Watchdog) -> Iterator[object]:
    """``events``, each step bounded by the watchdog; a lost peer the engine reported as a
    failed generation ends the group like a timeout does."""
    while True:
        with watchdog.guard():
            try:
                event = next(events)
            except StopIteration:
                return
        if isinstance(event, Failed) and is_lost_peer(event.message):
            watchdog.lost(event.message)
        yield event


class GroupBackend:
    """The server's backend on rank 0 of a group (``EngineBackend`` plus the broadcasts)."""

    def __init__(self, engine: Any, model_id: str, group: RankGroup, watchdog: Watchdog,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self._engine = engine
        self._group = group
        self._watchdog = watchdog
        self._heartbeat_s = heartbeat_s
        self._model = ServedModel(model_id, engine.info)
        self._jobs: "queue.Queue[Optional[tuple[ChatRequest, Sink, threading.Event]]]" = queue.Queue()
        self._current: Optional[tuple[ChatRequest, Sink, threading.Event]] = None
        self._broken: Optional[str] = None
        self._lock = threading.Lock()
        watchdog.on_failure(self._fail_jobs)
        self._thread = threading.Thread(target=self._serve, name="server-engine", daemon=True)
        self._thread.start()

    def served_model(self) -> Optional[ServedModel]:
        return self._model

    def submit(self, request: ChatRequest, sink: Sink, *, client: str = "") -> Callable[[], None]:
        cancel = threading.Event()
        with self._lock:
            broken = self._broken
            if broken is None:
                self._jobs.put((request, sink, cancel))
        if broken is not None:
            sink(Rejected(broken, 503, "rank_lost"))
            sink(JobEnded())
        return cancel.set

    def close(self) -> None:
        """Stop after the running request and tell the followers to stop too. Not a deliberate
        stop by itself: a SIGTERM from mlx.launch after another rank failed closes this too, and
        a peer found stuck then is still reported (Ctrl-C marks the stop through ``on_signal``)."""
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._heartbeat_s)
            except queue.Empty:
                self._broadcast(encode_frame(HEARTBEAT))
                continue
            if job is None:
                break
            request, sink, cancel = job
            if cancel.is_set():  # a client that left while queued costs nothing
                sink(JobEnded())
                continue
            self._current = job
            try:
                self._broadcast(encode_frame(REQUEST, request))
                for event in _guarded(run_request(self._engine, request, cancel), self._watchdog):
                    sink(event)
            except QwenDeskError as error:
                sink(Failed(str(error)))
            except Exception as error:  # noqa: BLE001 - one bad request must not stop the server
                log.exception("request failed")
                sink(Failed(f"Something went wrong: {error}"))
            finally:
                self._current = None
                sink(JobEnded())
        self._broadcast(encode_frame(STOP))
        self._end_queued()

    def _broadcast(self, frame: bytes) -> None:
        with self._watchdog.guard():
            self._group.broadcast_bytes(frame)

    def _fail_jobs(self, message: str) -> None:
        """The group is broken: the running answer fails, queued and later requests get a 503."""
        with self._lock:
            self._broken = message
        current = self._current
        if current is not None:
            current[1](Failed(message))
            current[1](JobEnded())
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1](Rejected(message, 503, "rank_lost"))
                job[1](JobEnded())
        # Let the server write those answers before the process ends.
        threading.Event().wait(1.0)

    def _end_queued(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[1](JobEnded())


def follow(engine: Any, group: RankGroup, watchdog: Watchdog,
           on_finished: Optional[Callable[[int, Optional[Finished]], None]] = None) -> Optional[str]:
    """A follower's life: run each request rank 0 broadcasts, until it says stop (returns the
    stop's error, if any). Every wait is bounded by ``watchdog``."""
    served = 0
    while True:
        with watchdog.guard():
            payload = group.broadcast_bytes(None)
        kind, request, error = decode_frame(payload)
        if kind == HEARTBEAT:
            continue
        if kind == STOP:
            watchdog.stopping.set()
            return error
        assert kind == REQUEST and request is not None
        served += 1
        finished: Optional[Finished] = None
        try:
            # The leader's cancel reaches this rank through the engine's GroupCancel.
            for event in _guarded(run_request(engine, request, threading.Event()), watchdog):
                if isinstance(event, Finished):
                    finished = event
        except QwenDeskError:
            pass  # rank 0 met the same error and answered its client
        log.info(
            "rank %d: request %d ended (%s, %d tokens)", group.rank, served,
            finished.reason if finished else "refused", finished.stats.generation_tokens if finished else 0,
        )
        if on_finished is not None:
            on_finished(served, finished)



def serve_rank(args: Any, settings: Any, *, listen: Callable, model_id: str, run_server: Callable) -> int:
    """``qwen-desk serve`` as one rank of an ``mlx.launch`` group (commands/serve.py)."""
    import signal
    import sys

    group, watchdog = join_group(args.rank_timeout, args.start_timeout)
    if watchdog is None:  # a "group" of one: the plain server
        watchdog = Watchdog(0, 1, args.rank_timeout)
    error: Optional[str] = None
    sock = engine = None
    if not group.is_leader:
        # Ctrl-C in the terminal reaches every local rank: rank 0 alone decides when to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if group.is_leader:
            sock = listen(settings.host, settings.port)  # a port in use stops the group before the load
        print(f"rank {group.rank} of {group.size}: loading {args.model}...", file=sys.stderr, flush=True)
        engine = load_for_group(args.model, group, split=getattr(args, "split", "layers"))
    except Exception as failure:  # noqa: BLE001 - every rank must hear about it, then it is raised
        error = str(failure) or type(failure).__name__
    failed = agree_started(group, watchdog if group.is_distributed else None, error)
    if failed:
        if sock is not None:
            sock.close()
        raise QwenDeskError(error or start_failure_message(group, failed))
    if not group.is_leader:
        follow(engine, group, watchdog)
        return 0
    backend = GroupBackend(engine, model_id, group, watchdog)
    try:
        return run_server(backend, model_id, settings, sock, on_signal=watchdog.stopping.set)
    finally:
        sock.close()
