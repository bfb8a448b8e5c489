"""While a model generates on the worker thread, the GUI's event loop keeps ticking.

A model large enough to keep the worker busy for a couple of seconds streams an answer into the
real window (rendering included); a 5 ms QTimer on the GUI thread must never wait 50 ms.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer

from app.chat.turns import TurnJob
from app.window.main_window import MainWindow
from app.settings import Settings
from app.chat.store import DATABASE_NAME, ConversationStore
from app.worker.worker import WorkerClient
from mlx_backend.events import SamplingParams
from tests.support.checkpoints import write_random_checkpoint

MAX_STALL_S = 0.050


@pytest.fixture(scope="module")
def busy_checkpoint(tmp_path_factory) -> Path:
    # Big enough that each token costs real compute on 2 CPU cores, small enough to write fast.
    return write_random_checkpoint(
        tmp_path_factory.mktemp("busy-model"),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=1024,
    )


def test_the_gui_never_stalls_while_an_answer_streams(qtbot, tmp_path: Path, monkeypatch, busy_checkpoint) -> None:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    client = WorkerClient()
    try:
        with qtbot.waitSignal(client.modelLoaded, timeout=60000):
            client.load_model(str(busy_checkpoint))
        store = ConversationStore(tmp_path / "data" / DATABASE_NAME)
        window = MainWindow(store, client, Settings())
        qtbot.addWidget(window)
        window.resize(900, 700)
        window.show()
        qtbot.waitExposed(window)
        window.chat.set_job_builder(
            lambda context: TurnJob(
                lambda engine, cancel, request=dataclasses.replace(
                    context.request,
                    sampling=SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
                    max_tokens=200,
                    enable_thinking=False,
                ): engine.stream(request, cancel)
            )
        )

        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(5)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        started = time.perf_counter()
        window.composer.set_text("Write a long answer, please.")
        window.composer.submit()
        qtbot.waitUntil(lambda: not window.chat.generating, timeout=60000)
        elapsed = time.perf_counter() - started
        timer.stop()

        answer = window.store.messages(window.chat.conversation_id)[-1]
        assert answer.status == "complete" and answer.stats["generation_tokens"] == 200
        assert elapsed > 1.0, f"the generation took only {elapsed:.2f} s: too short to prove anything"
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert len(ticks) > elapsed / 0.05  # the timer really ran throughout
        worst = max(gaps)
        assert worst < MAX_STALL_S, f"the GUI stalled {worst * 1000:.0f} ms (over {elapsed:.1f} s of generation)"
    finally:
        assert client.shutdown(10000)
