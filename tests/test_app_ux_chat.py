"""Issue 14, chat side: what a new user hit in the main window (no model, attaching documents,
small windows, switching chats mid-answer, a stale status bar, Stopped vs Interrupted, keys)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import QPoint, QPointF, QMimeData, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent, QDropEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QApplication

from app.chat.store import DATABASE_NAME, ConversationStore
from app.settings import Settings
from app.window.main_window import MainWindow
from app.worker.worker import WorkerClient
from mlx_backend.events import AnswerDelta, Finished, GenerationStats, PrefillProgress

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Info:
    name: str = "Qwen3-8B-4bit"
    context_length: int = 40960
    thinking_mode: str = "hybrid"
    weights_bytes: int = 4_600_000_000
    quantization_bits: int = 4


def stats(prompt: int, tokens: int, ttft: float = 0.25, tps: float = 50.0) -> GenerationStats:
    return GenerationStats(prompt, 0, tokens, ttft, 1000.0, tps, 5.0)


class GatedEngine:
    """Reads a prompt of ``prompt`` tokens, then answers; ``hold`` pauses mid-read until released."""

    info = Info()

    def __init__(self, prompt: int = 400, cached: int = 0) -> None:
        self.prompt, self.cached = prompt, cached
        self.hold = threading.Event()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.gate_reading = False
        self.gate_answering = False

    def stream(self, request, cancel) -> Iterator[object]:
        total = self.prompt - self.cached  # PrefillProgress leaves out what the cache holds
        yield PrefillProgress(0, total, None)
        if self.gate_reading:
            yield PrefillProgress(total // 2, total, 3.0)
            self.holding.set()
            while not (cancel.is_set() or self.release.wait(0.01)):
                pass
            if cancel.is_set():
                yield Finished("cancelled", stats(self.prompt, 0))
                return
        yield PrefillProgress(total, total, 0.0)
        yield AnswerDelta("Hello ")
        if self.gate_answering:
            self.holding.set()
            while not (cancel.is_set() or self.release.wait(0.01)):
                pass
            if cancel.is_set():
                yield Finished("cancelled", stats(self.prompt, 1))
                return
        yield AnswerDelta("there.")
        yield Finished("stop", stats(self.prompt, 2))


@pytest.fixture
def env(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    clients: list[WorkerClient] = []
    yield tmp_path, clients
    for client in clients:
        assert client.shutdown(10_000)


def make_window(qtbot, env, engine=None, *, load: bool = True, size=(900, 700)) -> MainWindow:
    tmp_path, clients = env
    client = WorkerClient(engine_loader=lambda path, progress: engine, batch_interval_s=0.0)
    clients.append(client)
    if load and engine is not None:
        with qtbot.waitSignal(client.modelLoaded, timeout=10_000):
            client.load_model("mlx-community/Qwen3-8B-4bit")
    window = MainWindow(ConversationStore(tmp_path / "data" / DATABASE_NAME), client, Settings())
    window.sidebar.confirm_delete = False
    qtbot.addWidget(window)
    window.resize(*size)
    window.show()
    qtbot.waitExposed(window)
    return window


def assistant_views(window):
    return [v for v in window.transcript.views if v.role == "assistant"]


def send(qtbot, window, text: str) -> None:
    window.composer.set_text(text)
    window.composer.submit()


# --- Send waits for a model ----------------------------------------------------------------

def test_without_a_model_send_is_off_says_why_and_keeps_the_typing(qtbot, env) -> None:
    engine = GatedEngine()
    window = make_window(qtbot, env, engine, load=False)
    composer = window.composer
    qtbot.keyClicks(composer.edit, "Hello")
    assert not composer.send_button.isEnabled()
    assert composer.send_button.toolTip() == "Load a model first"
    assert composer.hint.isVisible() and "Manage Models" in composer.hint.text()
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    assert composer.text == "Hello"  # kept, not sent
    assert window.store.conversations() == [] and window.transcript.views == []

    opened: list[bool] = []
    window.open_model_manager = lambda first_run=False: opened.append(True)  # type: ignore[method-assign]
    composer.hint.linkActivated.emit("manage")
    assert opened == [True]

    with qtbot.waitSignal(window.worker.modelLoaded, timeout=10_000):
        window.load_model("mlx-community/Qwen3-8B-4bit")
        assert not composer.send_button.isEnabled()  # still loading
        assert "loaded" in composer.send_button.toolTip()
    assert composer.send_button.isEnabled() and not composer.hint.isVisible()
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.chat.generating and len(window.transcript.views) == 2, timeout=10_000)
    assert assistant_views(window)[0].answer_text == "Hello there."


# --- attaching documents -------------------------------------------------------------------

def _attach_documents(window: MainWindow, qapp):
    from app.documents.file_open import FileOpenCollector
    from app.gui import _attach_documents as attach

    collector = FileOpenCollector(qapp, parent=window)
    attach(window, window.worker, collector)
    return collector


def test_the_paperclip_and_file_open_attach_documents(qtbot, env, qapp, tmp_path) -> None:
    window = make_window(qtbot, env, GatedEngine())
    _attach_documents(window, qapp)
    notes = tmp_path / "notes.txt"
    notes.write_text("Paragraph one.\n\nParagraph two.\n", encoding="utf-8")
    window.choose_documents = lambda: [str(notes)]  # type: ignore[method-assign]

    assert window.composer.attach_button.isVisible()
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: [a.path for a in window.composer.attachments] == [str(notes)], timeout=10_000)

    window.composer.clear_attachments()
    assert window.menus.open_action.shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    window.menus.open_action.trigger()
    qtbot.waitUntil(lambda: [a.path for a in window.composer.attachments] == [str(notes)], timeout=10_000)


def _drag(path: Path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(10, 10), *args)
    drop = QDropEvent(QPointF(10, 10), *args)
    enter._mime = drop._mime = mime
    return enter, drop


def test_a_file_dragged_over_the_window_is_highlighted_until_it_leaves_or_drops(qtbot, env, qapp, tmp_path) -> None:
    window = make_window(qtbot, env, GatedEngine())
    _attach_documents(window, qapp)
    highlight = window.drop_highlight
    pane = window.transcript.parentWidget()
    report = tmp_path / "report.txt"
    report.write_text("Hello.", encoding="utf-8")
    assert not highlight.isVisible()

    enter, drop = _drag(report)
    QApplication.sendEvent(window.transcript.viewport(), enter)
    assert enter.isAccepted()
    qtbot.waitUntil(highlight.isVisible, timeout=2000)
    assert highlight.geometry() == pane.rect()  # over the whole chat pane
    assert highlight.testAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)  # drops reach the widgets
    QApplication.sendEvent(window.transcript.viewport(), QDragLeaveEvent())
    qtbot.waitUntil(lambda: not highlight.isVisible(), timeout=2000)

    enter, drop = _drag(report)
    QApplication.sendEvent(window.composer.edit.viewport(), enter)
    qtbot.waitUntil(highlight.isVisible, timeout=2000)
    QApplication.sendEvent(window.composer.edit.viewport(), drop)
    qtbot.waitUntil(lambda: not highlight.isVisible(), timeout=2000)


# --- the plan panel in a small window -------------------------------------------------------

def _screenshots_module():
    spec = importlib.util.spec_from_file_location("qwen_desk_screenshots", ROOT / "packaging" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_at_800x500_the_plan_scrolls_and_the_transcript_stays_usable(qtbot, env, tmp_path) -> None:
    pytest.importorskip("pypdfium2")
    from app.documents.controller import DocumentController
    from mlx_backend.documents.summary import SummaryOptions

    shots = _screenshots_module()
    engine = shots.DocumentDemoEngine()
    window = make_window(qtbot, env, engine, size=(800, 500))
    documents = DocumentController(
        window.chat, window.composer, window.worker, drop_targets=(window.transcript,),
        place_panel=window.add_bottom_panel, system_prompt=lambda: "",
        options=SummaryOptions(budget_bytes=shots.DEMO_BUDGET_BYTES), clock=engine.clock, parent=window)
    pdf = shots.write_demo_pdf(tmp_path)
    documents.open_files([str(pdf)])
    qtbot.waitUntil(lambda: documents.plan_panel.plan is not None, timeout=60_000)
    qtbot.wait(100)
    window.resize(800, 500)
    qtbot.wait(100)

    assert window.transcript.height() >= 120
    panel = documents.plan_panel
    scroll = panel.parentWidget()
    while scroll is not None and not hasattr(scroll, "verticalScrollBar"):
        scroll = scroll.parentWidget()
    assert scroll is not None, "the plan panel sits in no scroll area"
    bar = scroll.verticalScrollBar()
    # All of the plan is reachable: what doesn't fit scrolls, nothing is cut off for good.
    assert bar.maximum() > 0 and bar.isVisible()
    assert scroll.viewport().height() + bar.maximum() >= panel.sizeHint().height()
    # The composer is still fully in the window.
    bottom = window.composer.mapTo(window, QPoint(0, window.composer.height())).y()
    assert bottom <= window.height()


# --- switching chats mid-answer ------------------------------------------------------------

def test_coming_back_to_a_chat_mid_read_shows_its_reading_row_again(qtbot, env) -> None:
    engine = GatedEngine(prompt=4000)
    window = make_window(qtbot, env, engine)
    send(qtbot, window, "A long question")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    engine.gate_reading = True
    send(qtbot, window, "Another one")
    assert engine.holding.wait(5)
    reading = window.chat.conversation_id
    view = assistant_views(window)[-1]
    qtbot.waitUntil(lambda: view.prefill_row.isVisible() and "50%" in view.prefill_label.text(), timeout=5000)

    window.new_chat()
    window.chat.open_conversation(reading)
    view = assistant_views(window)[-1]
    qtbot.waitUntil(view.prefill_row.isVisible, timeout=2000)
    assert "50%" in view.prefill_label.text()
    assert not view.note.isVisible()  # no "Stopped" on an answer that is still coming
    engine.release.set()
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    assert assistant_views(window)[-1].answer_text == "Hello there."


# --- the status bar --------------------------------------------------------------------------

def test_the_status_bar_speaks_for_the_chat_on_screen(qtbot, env) -> None:
    engine = GatedEngine(prompt=400)
    window = make_window(qtbot, env, engine)
    panel = window.status_panel
    send(qtbot, window, "First")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    first = window.chat.conversation_id
    assert panel.ttft_label.text() == "TTFT 0.25 s" and panel.speed_label.text() == "50.0 tok/s"

    window.new_chat()
    assert panel.ttft_label.text() == "" and panel.speed_label.text() == ""
    assert panel.context_label.text() == "40,960-token context"

    window.chat.open_conversation(first)  # its own last answer's figures again
    assert panel.ttft_label.text() == "TTFT 0.25 s"
    assert panel.context_label.text() == "Context 402 / 40,960"

    with qtbot.waitSignal(window.worker.modelLoaded, timeout=10_000):
        window.load_model("mlx-community/Qwen3-4B-4bit")
    assert panel.ttft_label.text() == "" and panel.speed_label.text() == ""


def test_the_live_context_during_regenerate_is_the_same_prompt(qtbot, env) -> None:
    engine = GatedEngine(prompt=400)
    window = make_window(qtbot, env, engine)
    panel = window.status_panel
    send(qtbot, window, "First")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    send(qtbot, window, "Second")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    engine.prompt, engine.cached = 900, 850  # the conversation's cache holds all but the last question
    send(qtbot, window, "Third")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    third = assistant_views(window)[-1].message_id

    engine.gate_answering = True
    panel.context_label.setText("")  # what follows is the live figure, not the last answer's
    window.chat.regenerate(third)
    assert engine.holding.wait(5)
    qtbot.waitUntil(lambda: window.chat._turn is not None and window.chat._turn.deltas >= 1, timeout=5000)
    qtbot.wait(50)
    # The prompt is the replaced answer's (900 tokens), not the previous turn's (400) nor the
    # uncached tail the engine reports (50); one answer token has arrived.
    used = int(panel.context_label.text().split()[1].replace(",", ""))
    assert 900 < used < 910
    engine.release.set()
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)


# --- Stopped vs Interrupted; the Quick Ask hand-over keeps its label --------------------------

def test_a_stopped_answer_and_a_killed_one_are_labelled_apart(qtbot, env) -> None:
    engine = GatedEngine()
    engine.gate_answering = True
    window = make_window(qtbot, env, engine)
    send(qtbot, window, "Stop me")
    assert engine.holding.wait(5)
    window.stop()
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    stopped = assistant_views(window)[-1]
    assert stopped.note.text() == "Stopped"
    stopped_id = window.chat.conversation_id

    # What a kill leaves behind: the partial answer saved while streaming, never finished.
    store = window.store
    killed = store.create_conversation("Killed")
    store.add_message(killed.id, "user", "Tell me")
    store.add_message(killed.id, "assistant", "Half an ans", status="interrupted")
    window.chat.open_conversation(killed.id)
    note = assistant_views(window)[-1].note
    qtbot.waitUntil(note.isVisible, timeout=2000)
    assert note.text().startswith("Interrupted")

    window.chat.open_conversation(stopped_id)  # rebuilt from the store: still the user's Stop
    assert assistant_views(window)[-1].note.text() == "Stopped"


def test_a_stopped_quick_ask_answer_stays_stopped_in_the_main_window(qtbot, env) -> None:
    window = make_window(qtbot, env, GatedEngine())
    window.start_chat_from_quick_ask("Question?", "Part of an", "stopped")
    view = assistant_views(window)[-1]
    qtbot.waitUntil(view.note.isVisible, timeout=2000)
    assert view.note.text() == "Stopped"
    window.start_chat_from_quick_ask("Question?", "A whole answer.", "complete")
    assert assistant_views(window)[-1].note.isHidden()


# --- keys, Copy, Settings, Quick Ask entry --------------------------------------------------

def test_the_edit_box_saves_on_return_and_cancels_on_esc(qtbot, env) -> None:
    window = make_window(qtbot, env, GatedEngine())
    send(qtbot, window, "Original")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    user = window.transcript.views[0]

    user.start_editing()
    qtbot.keyClicks(user.edit_box, "Changed")
    qtbot.keyClick(user.edit_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    assert user.edit_box.toPlainText() == "Changed\n"  # Shift+Return: a new line
    qtbot.keyClick(user.edit_box, Qt.Key.Key_Escape)
    assert not user.is_editing
    assert window.store.messages(window.chat.conversation_id)[0].content == "Original"

    user.start_editing()
    qtbot.keyClicks(user.edit_box, "Edited")
    qtbot.keyClick(user.edit_box, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.chat.generating and len(window.transcript.views) == 2, timeout=10_000)
    assert window.store.messages(window.chat.conversation_id)[0].content == "Edited"


def test_esc_clears_the_sidebar_search(qtbot, env) -> None:
    window = make_window(qtbot, env, GatedEngine())
    search = window.sidebar.search
    search.setFocus()
    qtbot.keyClicks(search, "kyoto")
    qtbot.keyClick(search, Qt.Key.Key_Escape)
    assert search.text() == ""


def test_copy_says_copied_and_is_not_offered_on_an_empty_reply(qtbot, env) -> None:
    window = make_window(qtbot, env, GatedEngine())
    send(qtbot, window, "Hi")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    answer = assistant_views(window)[-1]
    qtbot.mouseClick(answer.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "Hello there."
    assert answer.copy_button.text() == "Copied"
    qtbot.waitUntil(lambda: answer.copy_button.text() == "Copy", timeout=3000)

    store = window.store
    empty = store.create_conversation("Empty")
    store.add_message(empty.id, "user", "Hi")
    store.add_message(empty.id, "assistant", "", status="error")
    window.chat.open_conversation(empty.id)
    assert assistant_views(window)[-1].copy_button.isHidden()


def test_settings_and_quick_ask_have_shortcuts_on_every_platform(qtbot, env) -> None:
    window = make_window(qtbot, env, GatedEngine())
    keys = window.menus.settings_action.shortcuts()
    assert keys and not keys[0].isEmpty()
    if not QKeySequence.keyBindings(QKeySequence.StandardKey.Preferences):
        assert keys == [QKeySequence("Ctrl+,")]
    action = window.menus.quick_ask_action
    assert action.shortcut() == QKeySequence("Ctrl+Shift+Space")
    assert action in window.actions()  # works with the menu bar hidden
    with qtbot.waitSignal(window.quickAskRequested, timeout=1000):
        action.trigger()


class SlowStartEngine(GatedEngine):
    """Spends a while before it starts reading the prompt (e.g. loading a prompt cache from disk),
    which the engine's TTFT does not count."""

    def stream(self, request, cancel) -> Iterator[object]:
        import time

        time.sleep(0.4)
        yield from super().stream(request, cancel)


def test_the_live_ttft_is_timed_like_the_engines(qtbot, env) -> None:
    window = make_window(qtbot, env, SlowStartEngine())
    live: list[float] = []
    window.chat.liveStatsChanged.connect(lambda s: "ttft_s" in s and live.append(s["ttft_s"]))
    send(qtbot, window, "Hi")
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=10_000)
    assert live and live[0] < 0.3  # from when reading began, not from the job's start


def test_at_800x500_the_plans_summarize_and_cancel_stay_in_view_while_it_scrolls(qtbot, env, tmp_path) -> None:
    pytest.importorskip("pypdfium2")
    from app.documents.controller import DocumentController
    from mlx_backend.documents.summary import SummaryOptions

    shots = _screenshots_module()
    engine = shots.DocumentDemoEngine()
    window = make_window(qtbot, env, engine, size=(800, 500))
    documents = DocumentController(
        window.chat, window.composer, window.worker, drop_targets=(window.transcript,),
        place_panel=window.add_bottom_panel, system_prompt=lambda: "",
        options=SummaryOptions(budget_bytes=shots.DEMO_BUDGET_BYTES), clock=engine.clock, parent=window)
    documents.open_files([str(shots.write_demo_pdf(tmp_path))])
    qtbot.waitUntil(lambda: documents.plan_panel.plan is not None, timeout=60_000)
    window.resize(800, 500)
    qtbot.wait(100)

    panel = documents.plan_panel
    scroll = panel.parentWidget()
    while scroll is not None and not hasattr(scroll, "verticalScrollBar"):
        scroll = scroll.parentWidget()
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the plan itself scrolls...

    def in_window(button) -> bool:
        top_left = button.mapTo(window, QPoint(0, 0))
        return button.isVisible() and top_left.y() >= 0 and top_left.y() + button.height() <= window.height() \
            and not scroll.isAncestorOf(button)

    # ...and Summarize and Cancel are in view at the top of the scroll, at its end, anywhere.
    for value in (0, bar.maximum() // 2, bar.maximum()):
        bar.setValue(value)
        assert in_window(panel.start_button) and in_window(panel.cancel_button)
    assert panel.start_button.isEnabled()
    assert window.transcript.height() >= 120
    bottom = window.composer.mapTo(window, QPoint(0, window.composer.height())).y()
    assert bottom <= window.height()
    # Cancel still dismisses the plan, and its buttons go with it.
    panel.cancel_button.click()
    assert not panel.isVisible() and not panel.start_button.isVisible() and not panel.cancel_button.isVisible()
