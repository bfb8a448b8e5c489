"""App start-up and shutdown, Quick Ask hand-over, and the drop hook for documents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QLabel

from app.documents.controller import DocumentController
from app.window.main_window import MainWindow
from app.settings import Settings
from app.chat.store import DATABASE_NAME, ConversationStore
from app.worker.worker import WorkerClient
from tests.support.paths import REPO_ROOT


# Run in a child process: after QApplication.exec() has returned, Qt stops delivering
# cross-thread events, which would break every later test sharing this process's QApplication.
_START_AND_QUIT = """
import json, os, sys, threading
from pathlib import Path
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import mlx_backend.hub.download
from app.gui import run_gui
from app.window.main_window import MainWindow
from app.models.manager import ModelManager
from app.documents.controller import DocumentController

seen = {}
REPO = "mlx-community/Qwen3-0.6B-4bit"
partial = Path(os.environ["HF_HUB_CACHE"]) / "models--mlx-community--Qwen3-0.6B-4bit" / "blobs"
started = threading.Event()

def slow_download(repo_id, *, progress=None, cancel=None):  # stands in for huggingface_hub
    partial.mkdir(parents=True)
    (partial / "abc.incomplete").write_bytes(b"x" * 100)
    started.set()
    while not cancel.wait(0.02):
        progress(1_000_000, 400_000_000)
    raise mlx_backend.hub.download.DownloadCancelled("cancelled")

mlx_backend.hub.download.resolve_model_path = slow_download

def inspect_then_quit():
    windows = [w for w in QApplication.topLevelWidgets() if w.isVisible()]
    main = next(w for w in windows if isinstance(w, MainWindow))
    seen["manager_open"] = any(isinstance(w, ModelManager) for w in windows)
    seen["download"] = main.model_manager.download(REPO)
    seen["download_started"] = started.wait(5)
    seen["app_name"] = QApplication.applicationName()
    seen["documents_attached"] = bool(main.findChildren(DocumentController))
    seen["window_icon"] = not QApplication.windowIcon().isNull()
    seen["quits_with_window"] = QApplication.quitOnLastWindowClosed()
    seen["worker"] = main.worker
    QApplication.quit()

app = QApplication(sys.argv[:1])
QTimer.singleShot(500, inspect_then_quit)
code = run_gui([])
worker = seen.pop("worker")
seen["worker_stopped"] = not worker.worker_thread.isRunning()
seen["download_stopped"] = not seen.pop("download").running
seen["partial_removed"] = not partial.parent.exists()
seen["exit_code"] = code
print("RESULT " + json.dumps(seen))
"""


def test_first_run_opens_the_model_manager_and_quitting_stops_the_worker_and_downloads(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "QWEN_DESK_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _START_AND_QUIT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result == {
        "manager_open": True,  # no model chosen yet: the Models window opens on first run
        "app_name": "Qwen Desk",
        "documents_attached": True,
        "window_icon": True,  # the shipped icon (app.quick_ask.tray.app_icon)
        "quits_with_window": True,  # "menu bar only" is off by default
        "worker_stopped": True,
        "download_started": True,
        "download_stopped": True,  # quitting cancelled the running download and waited for it
        "partial_removed": True,  # ... which removed its partial files
        "exit_code": 0,
    }
    assert (tmp_path / "data" / DATABASE_NAME).exists()


def _window(qtbot, tmp_path: Path, monkeypatch) -> tuple[MainWindow, WorkerClient]:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    client = WorkerClient(engine_loader=lambda path, progress: None)
    window = MainWindow(ConversationStore(tmp_path / "data" / DATABASE_NAME), client, Settings())
    qtbot.addWidget(window)
    window.show()
    return window, client


def test_quick_ask_exchange_continues_as_a_stored_chat(qtbot, tmp_path: Path, monkeypatch) -> None:
    window, client = _window(qtbot, tmp_path, monkeypatch)
    try:
        window.start_chat_from_quick_ask("Capital of France?", "**Paris**.")
        conversation_id = window.chat.conversation_id
        assert conversation_id is not None and window.sidebar.titles() == ["Capital of France?"]
        user, answer = window.store.messages(conversation_id)
        assert (user.content, answer.content, answer.status) == ("Capital of France?", "**Paris**.", "complete")
        assert window.transcript.views[1].body.toPlainText().strip() == "Paris."
    finally:
        assert client.shutdown(5000)


def test_bottom_panels_sit_between_the_transcript_and_the_composer(qtbot, tmp_path: Path, monkeypatch) -> None:
    window, client = _window(qtbot, tmp_path, monkeypatch)
    try:
        window.resize(900, 700)
        first, second = QLabel("first panel"), QLabel("second panel")
        window.add_bottom_panel(first)
        window.add_bottom_panel(second)
        qtbot.waitUntil(lambda: first.isVisible() and second.isVisible())

        def top(widget) -> int:
            return widget.mapTo(window, QPoint(0, 0)).y()

        transcript_bottom = top(window.transcript) + window.transcript.height()
        assert transcript_bottom <= top(first) < top(second) < top(window.composer)
        assert top(second) + second.height() <= top(window.composer)
        shown_height = window.transcript.height()
        first.hide()
        second.hide()  # a hidden panel gives its room back to the transcript
        qtbot.waitUntil(lambda: window.transcript.height() > shown_height)
    finally:
        assert client.shutdown(5000)


def _drop_events(path: Path) -> tuple[QDragEnterEvent, QDropEvent]:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    actions = Qt.DropAction.CopyAction
    buttons, modifiers = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(QPointF(10, 10).toPoint(), actions, mime, buttons, modifiers)
    drop = QDropEvent(QPointF(10, 10), actions, mime, buttons, modifiers)
    enter._mime = drop._mime = mime  # keep the data alive as long as the events
    return enter, drop


def test_file_drops_reach_the_document_feature_only_once_it_is_attached(qtbot, tmp_path: Path, monkeypatch) -> None:
    window, client = _window(qtbot, tmp_path, monkeypatch)
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4")
    try:
        enter, _ = _drop_events(report)
        QApplication.sendEvent(window.transcript.viewport(), enter)
        assert not enter.isAccepted()  # no document feature attached: drops are refused

        documents = DocumentController(window.chat, window.composer, client, drop_targets=(window.transcript,),
                                       place_panel=window.add_bottom_panel, system_prompt=lambda: "")
        received: list[list[str]] = []
        documents.drop_filter.filesDropped.connect(received.append)
        for target in (window.transcript.viewport(), window.composer.edit.viewport()):
            enter, drop = _drop_events(report)
            QApplication.sendEvent(target, enter)
            assert enter.isAccepted()
            QApplication.sendEvent(target, drop)
        assert received == [[str(report)], [str(report)]]
    finally:
        assert client.shutdown(5000)


def test_quitting_before_the_models_window_ever_opened_has_no_downloads_to_stop() -> None:
    from app.gui import shut_down_downloads

    assert shut_down_downloads(None, timeout_s=2.0)


# A chat turn whose (fake) engine is mid-prefill, looping on its cancel Event, when the user quits.
_QUIT_DURING_A_READ = """
import sys, threading, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import mlx_backend.generation.engine
from mlx_backend.events import PrefillProgress
from app.gui import run_gui
from app.window.main_window import MainWindow

reading = threading.Event()
HONOURS_CANCEL = sys.argv[1] == "honours-cancel"

class PrefillingEngine:
    info = None

    def stream(self, request, cancel):
        yield PrefillProgress(0, 100_000, None)
        reading.set()
        while not (HONOURS_CANCEL and cancel.is_set()):  # a long prompt read, between chunks
            time.sleep(0.01)

mlx_backend.generation.engine.Engine.load = staticmethod(lambda path, progress=None, **kw: PrefillingEngine())

def main_window():
    return next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))

def start_reading():
    window = main_window()
    window.worker.modelLoaded.connect(lambda info: window.chat.send("Summarize War and Peace"))
    window.worker.load_model("fake")
    poll.start()

def quit_once_reading():
    if reading.is_set():
        poll.stop()
        print("QUIT_AT", time.time(), flush=True)
        QApplication.quit()

app = QApplication(sys.argv[:1])
poll = QTimer()
poll.setInterval(10)
poll.timeout.connect(quit_once_reading)
QTimer.singleShot(300, start_reading)
sys.exit(run_gui([]))
"""


@pytest.mark.parametrize("engine", ["honours-cancel", "stuck-in-native-code"])
def test_quitting_during_a_prompt_read_exits_at_once_without_a_qt_warning(tmp_path: Path, engine: str) -> None:
    env = {
        **os.environ,
        "QWEN_DESK_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _QUIT_DURING_A_READ, engine], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    exited_at = time.time()
    quit_lines = [line for line in done.stdout.splitlines() if line.startswith("QUIT_AT ")]
    assert done.returncode == 0 and quit_lines, done.stderr[-3000:]
    assert exited_at - float(quit_lines[-1].split()[1]) < 2.0
    assert "QThread: Destroyed" not in done.stderr
