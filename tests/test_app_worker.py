"""The inference worker thread: FIFO jobs, cancel, errors, batching, and a real model."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.worker.batching import BatchedAnswerDelta, BatchedThinkingDelta, EventBatcher
from app.worker.handle import JobHandle
from app.worker.worker import NO_MODEL_MESSAGE, WorkerClient, _JobQueue, _QueuedJob
from mlx_backend.errors import RequestError
from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    ChatRequest,
    Finished,
    PrefillProgress,
    SamplingParams,
    ThinkingDelta,
)


class FakeEngine:
    info = None


@pytest.fixture
def client(qtbot):
    worker = WorkerClient(engine_loader=lambda path, progress: FakeEngine())
    with qtbot.waitSignal(worker.modelLoaded, timeout=5000):
        worker.load_model("fake")
    yield worker
    assert worker.shutdown(5000)


class Recorder:
    """Everything one job's handle emitted, in order, and on which thread it arrived."""

    def __init__(self, handle: JobHandle) -> None:
        self.handle = handle
        self.log: list[tuple[str, object]] = []
        self.threads: set[int] = set()
        handle.started.connect(lambda: self._note("started", None))
        handle.event.connect(lambda event: self._note("event", event))
        handle.failed.connect(lambda message: self._note("failed", message))
        handle.finished.connect(lambda: self._note("finished", None))

    def _note(self, kind: str, payload: object) -> None:
        self.threads.add(threading.get_ident())
        self.log.append((kind, payload))

    @property
    def events(self) -> list[object]:
        return [payload for kind, payload in self.log if kind == "event"]

    @property
    def failures(self) -> list[object]:
        return [payload for kind, payload in self.log if kind == "failed"]

    def wait(self, qtbot, timeout: int = 10000) -> "Recorder":
        qtbot.waitUntil(lambda: ("finished", None) in self.log, timeout=timeout)
        return self


def _submit(client: WorkerClient, job, **kwargs) -> Recorder:
    return Recorder(client.submit(job, **kwargs))


def _run(qtbot, client: WorkerClient, job, **kwargs) -> Recorder:
    return _submit(client, job, **kwargs).wait(qtbot)


def test_jobs_run_first_in_first_out_off_the_gui_thread(qtbot, client: WorkerClient) -> None:
    ran: list[tuple[str, int]] = []
    release = threading.Event()

    def job(name: str, wait: bool = False):
        def run(engine, cancel):
            assert isinstance(engine, FakeEngine)
            if wait:
                release.wait(5)
            ran.append((name, threading.get_ident()))
            return [AnswerDelta(name)]

        return run

    _submit(client, job("a", wait=True))
    b = _submit(client, job("b"))
    assert b.handle.job_id in client.pending_job_ids and client.is_busy()
    c = _submit(client, job("c"))
    release.set()
    c.wait(qtbot)
    assert [name for name, _ in ran] == ["a", "b", "c"]
    assert {thread for _, thread in ran} != {threading.get_ident()}
    qtbot.waitUntil(lambda: not client.is_busy(), timeout=5000)
    assert client.pending_job_ids == []


def test_signals_for_one_job_arrive_in_order_on_the_gui_thread(qtbot, client: WorkerClient) -> None:
    def failing(engine, cancel):
        yield AnswerDelta("partial")
        raise RequestError("The last message is empty.")

    job = _run(qtbot, client, failing)
    assert job.log == [
        ("started", None),
        ("event", BatchedAnswerDelta("partial", 1)),
        ("failed", "The last message is empty."),
        ("finished", None),
    ]
    assert job.threads == {threading.get_ident()}


def test_each_caller_gets_only_its_own_jobs_events(qtbot, client: WorkerClient) -> None:
    first = _submit(client, lambda engine, cancel: [AnswerDelta("one"), AnswerDelta("more")])
    second = _submit(client, lambda engine, cancel: [ThinkingDelta("two")])
    second.wait(qtbot)
    first.wait(qtbot)
    assert "".join(e.text for e in first.events) == "onemore"
    assert all(isinstance(e, AnswerDelta) for e in first.events)
    assert second.events == [BatchedThinkingDelta("two", 1)]


def test_cancel_stops_the_running_job_through_its_event(qtbot, client: WorkerClient) -> None:
    saw_cancel = threading.Event()

    def endless(engine, cancel):
        while not cancel.is_set():
            yield AnswerDelta(".")
            time.sleep(0.005)
        saw_cancel.set()
        yield Finished("cancelled", None)  # type: ignore[arg-type]

    job = _submit(client, endless)
    qtbot.waitUntil(lambda: ("started", None) in job.log, timeout=5000)
    assert client.current_job_id == job.handle.job_id
    assert job.handle.cancel()
    job.wait(qtbot)
    assert saw_cancel.is_set()


def test_cancelling_a_queued_job_means_it_never_runs_and_it_gets_finished_only(qtbot, client: WorkerClient) -> None:
    ran_second = threading.Event()

    def blocker(engine, cancel):
        cancel.wait(5)
        return []

    def second(engine, cancel):
        ran_second.set()
        return []

    first = _submit(client, blocker)
    qtbot.waitUntil(lambda: ("started", None) in first.log, timeout=5000)
    queued = _submit(client, second)
    assert queued.handle.cancel()
    assert queued.log == [("finished", None)]
    assert client.cancel_running()
    first.wait(qtbot)
    qtbot.waitUntil(lambda: not client.is_busy(), timeout=5000)
    assert queued.log == [("finished", None)]  # nothing more came later
    assert not ran_second.is_set()


def test_a_cancel_reaches_a_job_the_worker_has_just_taken_from_the_queue() -> None:
    # Regression: the client used to look at the running job and then search the queue in two
    # separate steps; a job taken by the worker in between was in neither and ran on, uncancelled.
    # The queue now answers both in one locked step, so the job is found wherever it is.
    queue = _JobQueue()
    queue.put(_QueuedJob("q", "job", run=lambda engine, cancel: []))
    taken = queue.take()  # the worker thread takes it
    assert taken is not None and not taken.cancel.is_set()
    assert queue.cancel("q") == "running"
    assert taken.cancel.is_set()

    queue.put(_QueuedJob("waiting", "job", run=lambda engine, cancel: []))
    assert queue.cancel("waiting") == "removed"
    assert queue.pending_ids() == []
    assert queue.cancel("unknown") is None


def test_cancel_without_an_id_leaves_a_running_model_load_alone() -> None:
    queue = _JobQueue()
    queue.put(_QueuedJob("load-1", "load", model="m"))
    load = queue.take()
    assert queue.cancel(None) is None
    assert load is not None and not load.cancel.is_set()


def test_unexpected_exceptions_are_reported_and_the_worker_keeps_going(qtbot, client: WorkerClient) -> None:
    def broken(engine, cancel):
        raise ZeroDivisionError("division by zero")

    assert _run(qtbot, client, broken).failures == ["Something went wrong: division by zero"]
    ok = _run(qtbot, client, lambda e, c: [AnswerDelta("fine")])
    assert ok.events == [BatchedAnswerDelta("fine", 1)] and ok.failures == []


def test_a_job_needing_a_model_fails_clearly_when_none_is_loaded(qtbot) -> None:
    client = WorkerClient(engine_loader=lambda path, progress: FakeEngine())
    try:
        assert _run(qtbot, client, lambda e, c: []).failures == [NO_MODEL_MESSAGE]
        ran = []
        assert _run(qtbot, client, lambda e, c: ran.append(e) or [], needs_model=False).failures == []
        assert ran == [None]
    finally:
        assert client.shutdown(5000)


def test_token_deltas_are_batched_without_losing_or_reordering_text(qtbot, client: WorkerClient) -> None:
    def chatty(engine, cancel):
        yield PrefillProgress(0, 10, None)
        yield PrefillProgress(10, 10, 0.0)
        for i in range(600):
            yield ThinkingDelta(f"t{i} ")
        for i in range(1500):
            yield AnswerDelta(f"a{i} ")
            if i % 100 == 0:
                time.sleep(0.004)  # a few pauses, like a real decode loop

    events = _run(qtbot, client, chatty).events
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert thinking == "".join(f"t{i} " for i in range(600))
    assert answer == "".join(f"a{i} " for i in range(1500))
    first_answer = next(i for i, e in enumerate(events) if isinstance(e, AnswerDelta))
    assert first_answer > max(i for i, e in enumerate(events) if isinstance(e, ThinkingDelta))
    assert isinstance(events[0], PrefillProgress)
    # 2,100 deltas crossed the thread boundary as a handful of signals, yet more than one,
    # each saying how many it merged (the window's live tokens/s counts them).
    assert 2 < len(events) < 100
    assert sum(e.count for e in events if isinstance(e, ThinkingDelta)) == 600
    assert sum(e.count for e in events if isinstance(e, AnswerDelta)) == 1500


def test_batcher_releases_on_time_and_on_a_change_of_kind() -> None:
    now = [0.0]
    batcher = EventBatcher(interval_s=0.03, clock=lambda: now[0])
    assert batcher.feed(AnswerDelta("a")) == [BatchedAnswerDelta("a", 1)]  # nothing sent yet: at once
    assert batcher.feed(AnswerDelta("b")) == []
    now[0] = 0.01
    assert batcher.feed(AnswerDelta("c")) == []
    now[0] = 0.031
    assert batcher.feed(AnswerDelta("d")) == [BatchedAnswerDelta("bcd", 3)]
    assert batcher.feed(AnswerDelta("e")) == []
    assert batcher.feed(ThinkingDelta("f")) == [BatchedAnswerDelta("e", 1)]  # order kept across kinds
    done = Finished("stop", None)  # type: ignore[arg-type]
    assert batcher.feed(done) == [BatchedThinkingDelta("f", 1), done]
    assert batcher.flush() == []


def test_prefill_progress_is_never_held_back() -> None:
    # The engine may compute for seconds after a progress event: a held one would sit stale.
    now = [0.0]
    batcher = EventBatcher(interval_s=0.03, clock=lambda: now[0])
    first, second = PrefillProgress(0, 100, None), PrefillProgress(50, 100, 2.0)
    assert batcher.feed(first) == [first]
    assert batcher.feed(second) == [second]  # the same instant, still at once
    assert batcher.feed(AnswerDelta("a")) == [BatchedAnswerDelta("a", 1)]
    assert batcher.feed(AnswerDelta("b")) == []
    third = PrefillProgress(100, 100, 0.0)
    assert batcher.feed(third) == [BatchedAnswerDelta("b", 1), third]  # pending text goes first


def test_a_real_checkpoint_loads_and_streams_on_the_worker_thread(qtbot, tiny_checkpoint: Path) -> None:
    client = WorkerClient()  # the real Engine.load
    try:
        with qtbot.waitSignal(client.modelLoaded, timeout=30000) as loaded:
            client.load_model(str(tiny_checkpoint))
        info = loaded.args[0]
        assert info.thinking_mode == "hybrid" and info.context_length > 0
        assert client.model_name == str(tiny_checkpoint)
        request = ChatRequest(
            messages=(ChatMessage("user", "Hello"),),
            enable_thinking=False,
            sampling=SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
            max_tokens=40,
        )
        events = _run(qtbot, client, lambda e, c: e.stream(request, c)).events
        answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
        finished = [e for e in events if isinstance(e, Finished)]
        assert answer and len(finished) == 1
        assert finished[0].stats.generation_tokens == 40
    finally:
        assert client.shutdown(10000)


def test_a_missing_model_folder_reports_why(qtbot, tmp_path: Path) -> None:
    client = WorkerClient()
    try:
        with qtbot.waitSignal(client.modelLoadFailed, timeout=30000) as failed:
            client.load_model(str(tmp_path / "nowhere"))
        assert "does not exist" in failed.args[0]
        assert client.model_info is None and client.model_name == ""
    finally:
        assert client.shutdown(10000)


def test_a_job_whose_cleanup_raises_still_finishes_and_the_queue_goes_on(qtbot, client: WorkerClient) -> None:
    class BadCleanup:
        def __iter__(self):
            return self

        def __next__(self):
            raise StopIteration

        def close(self):
            raise RuntimeError("cleanup broke")

    _run(qtbot, client, lambda engine, cancel: BadCleanup())
    ran = threading.Event()

    def after(engine, cancel):
        ran.set()
        return [AnswerDelta("ok")]

    _run(qtbot, client, after)
    assert ran.is_set()
