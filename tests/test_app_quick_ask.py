"""Quick Ask popup: streams through the shared worker, renders safely, copies, hands over."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QGuiApplication

from app.quick_ask.controller import QuickAskController
from app.quick_ask.popup import QuickAskOptions, QuickAskPopup
from app.worker.worker import NO_MODEL_MESSAGE, WorkerClient
from mlx_backend.events import (
    AnswerDelta,
    ChatRequest,
    Finished,
    GenerationStats,
    SamplingParams,
    ThinkingDelta,
)
from tests.support.checkpoints import write_random_checkpoint

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
STATS = GenerationStats(
    prompt_tokens=5, cached_tokens=0, generation_tokens=3, ttft_s=0.01, prompt_tps=500.0,
    generation_tps=100.0, peak_memory_gb=0.0,
)


class ScriptedEngine:
    """Stands in for the Engine where a test needs exact text or control over timing."""

    def __init__(self, chunks: list[object], *, hold_until_cancelled: bool = False) -> None:
        self.chunks = chunks
        self.hold_until_cancelled = hold_until_cancelled
        self.requests: list[ChatRequest] = []
        self.saw_cancel = threading.Event()

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[object]:
        self.requests.append(request)
        yield from self.chunks
        if self.hold_until_cancelled:
            if cancel.wait(10):
                self.saw_cancel.set()
                yield Finished("cancelled", STATS)
                return
        yield Finished("stop", STATS)


def _client_with(engine: object) -> WorkerClient:
    client = WorkerClient(engine_loader=lambda path, progress: engine, batch_interval_s=0.0)
    return client


@pytest.fixture
def make_client(qtbot):
    clients: list[WorkerClient] = []

    def make(engine: object | None = None, *, load: bool = True) -> WorkerClient:
        client = _client_with(engine) if engine is not None else WorkerClient(batch_interval_s=0.0)
        clients.append(client)
        if load and engine is not None:
            with qtbot.waitSignal(client.modelLoaded, timeout=10_000):
                client.load_model("scripted")
        return client

    yield make
    for client in clients:
        assert client.shutdown(10_000)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("quick-ask-model"))


def _popup(qtbot, client, **options) -> QuickAskPopup:
    popup = QuickAskPopup(client, options=QuickAskOptions(**options))
    qtbot.addWidget(popup)
    return popup


def _answer_and_wait(qtbot, popup: QuickAskPopup, question: str, timeout=60_000, on_event=None):
    job = popup.ask(question)  # its events are queued: connecting now misses none
    if on_event is not None:
        job.event.connect(on_event)
    with qtbot.waitSignal(job.finished, timeout=timeout):
        pass
    assert not popup.is_answering()
    return job


def test_popup_streams_the_answer_of_a_real_model_through_the_shared_worker(qtbot, make_client, tiny_checkpoint):
    from mlx_backend.generation.engine import Engine

    client = make_client(load=False)
    with qtbot.waitSignal(client.modelLoaded, timeout=60_000):
        client.load_model(str(tiny_checkpoint))
    popup = _popup(qtbot, client, sampling=GREEDY, max_tokens=12, seed=0)
    popup.popup_at(QRect())
    deltas: list[str] = []
    _answer_and_wait(qtbot, popup, "What is MLX?",
                     on_event=lambda event: isinstance(event, AnswerDelta) and deltas.append(event.text))

    # What the popup shows is exactly what the model streamed, and the same text the engine
    # gives for this request when run directly (greedy, so it is reproducible).
    direct = Engine.load(str(tiny_checkpoint))
    request = QuickAskOptions(sampling=GREEDY, max_tokens=12, seed=0).request_for("What is MLX?")
    expected = "".join(e.text for e in direct.stream(request) if isinstance(e, AnswerDelta))
    assert expected
    assert popup.answer == "".join(deltas) == expected
    assert popup.question == "What is MLX?"
    assert popup.answer_view.toPlainText().strip()
    assert popup.copy_button.isVisible() and popup.copy_button.isEnabled()
    assert popup.open_button.isVisible() and popup.open_button.isEnabled()
    assert not popup.stop_button.isVisible()
    assert "token" in popup.status_label.text()  # the finish note replaced "Answering…"


def test_quick_questions_skip_thinking_and_carry_the_options(qtbot, make_client):
    engine = ScriptedEngine([AnswerDelta("Paris.")])
    client = make_client(engine)
    popup = _popup(qtbot, client, system_prompt="Be brief.", max_tokens=64)

    _answer_and_wait(qtbot, popup, "Capital of France?")

    (request,) = engine.requests
    assert request.enable_thinking is False
    assert request.max_tokens == 64
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "Be brief."), ("user", "Capital of France?"),
    ]
    assert popup.answer == "Paris."


def test_answer_is_markdown_rendered_without_fetching_anything(qtbot, make_client):
    markdown = "**Bold** and `code`\n\n![logo](https://example.com/logo.png)\n"
    client = make_client(ScriptedEngine([AnswerDelta(markdown[:10]), AnswerDelta(markdown[10:])]))
    popup = _popup(qtbot, client)

    _answer_and_wait(qtbot, popup, "format something")

    shown = popup.answer_view.toPlainText()
    assert "Bold and code" in shown and "**" not in shown
    assert "[image: logo]" in shown  # the image became a link; nothing was downloaded
    assert popup.answer == markdown  # Copy and hand-over keep the Markdown source


def test_thinking_shows_as_progress_not_as_answer_text(qtbot, make_client):
    client = make_client(ScriptedEngine([ThinkingDelta("let me think"), AnswerDelta("42")]))
    popup = _popup(qtbot, client)
    statuses: list[str] = []
    _answer_and_wait(qtbot, popup, "meaning of life?", on_event=lambda event: statuses.append(popup.status_label.text()))

    assert "Thinking\u2026" in statuses
    assert popup.answer == "42"
    assert "let me think" not in popup.answer_view.toPlainText()


def test_copy_puts_the_answer_on_the_clipboard(qtbot, make_client):
    client = make_client(ScriptedEngine([AnswerDelta("Copy *me*")]))
    popup = _popup(qtbot, client)
    QGuiApplication.clipboard().setText("something else")

    _answer_and_wait(qtbot, popup, "q")
    qtbot.mouseClick(popup.copy_button, Qt.MouseButton.LeftButton)

    assert QGuiApplication.clipboard().text() == "Copy *me*"
    assert popup.status_label.text() == "Copied"


def test_escape_closes_the_popup_and_stops_the_running_answer(qtbot, make_client):
    engine = ScriptedEngine([AnswerDelta("partial")], hold_until_cancelled=True)
    client = make_client(engine)
    popup = _popup(qtbot, client)
    popup.popup_at(QRect())
    qtbot.waitUntil(popup.isVisible)
    job = popup.ask("a long question")
    with qtbot.waitSignal(job.event, timeout=10_000):
        pass
    assert popup.stop_button.isVisible()

    with qtbot.waitSignal(job.finished, timeout=10_000):
        qtbot.keyClick(popup.question_edit, Qt.Key.Key_Escape)

    assert not popup.isVisible()
    assert engine.saw_cancel.is_set()  # the shared worker is free for the main window again
    assert popup.answer == "partial"  # what was written is kept for when it reopens
    assert not popup.is_answering()


def test_open_in_main_window_hands_over_question_and_answer(qtbot, make_client):
    client = make_client(ScriptedEngine([AnswerDelta("An "), AnswerDelta("answer.")]))
    popup = _popup(qtbot, client)
    popup.popup_at(QRect())
    _answer_and_wait(qtbot, popup, "Hand me over")

    with qtbot.waitSignal(popup.open_in_main_window, timeout=2000) as handed:
        qtbot.mouseClick(popup.open_button, Qt.MouseButton.LeftButton)

    assert handed.args == ["Hand me over", "An answer.", "complete"]
    assert not popup.isVisible()


def test_without_a_model_the_popup_says_so(qtbot, make_client):
    client = make_client(load=False)
    popup = _popup(qtbot, client)

    _answer_and_wait(qtbot, popup, "anyone there?")

    assert popup.status_label.text() == NO_MODEL_MESSAGE
    assert popup.answer == ""
    assert not popup.open_button.isEnabled() and not popup.copy_button.isEnabled()


def test_a_new_question_replaces_the_previous_answer(qtbot, make_client):
    client = make_client(ScriptedEngine([AnswerDelta("same answer")]))
    popup = _popup(qtbot, client)
    first = _answer_and_wait(qtbot, popup, "first")
    second = _answer_and_wait(qtbot, popup, "second")

    assert second is not first
    assert popup.question == "second"
    assert popup.answer == "same answer"  # not "same answersame answer"


def test_popup_stays_on_screen_under_its_anchor(qtbot, make_client):
    client = make_client(load=False)
    popup = _popup(qtbot, client)
    area = QGuiApplication.primaryScreen().availableGeometry()

    popup.popup_at(QRect(area.right() - 10, area.top(), 20, 20))  # icon at the far right
    assert popup.geometry().right() <= area.right()
    assert popup.geometry().top() >= area.top() + 20
    popup.close()


def test_controller_toggles_the_popup_and_forwards_the_hand_over(qtbot, make_client, monkeypatch):
    import app.quick_ask.controller as quick_ask

    client = make_client(ScriptedEngine([AnswerDelta("ok")]))
    controller = QuickAskController(client, options_provider=lambda: QuickAskOptions(max_tokens=5))
    qtbot.addWidget(controller.popup)

    controller.toggle()
    assert controller.popup.isVisible()
    controller.toggle()
    assert not controller.popup.isVisible()
    controller.toggle()  # right after closing: the click that closed it must not reopen it
    assert not controller.popup.isVisible()
    monkeypatch.setattr(quick_ask, "REOPEN_GUARD_S", 0.0)
    controller.toggle()
    assert controller.popup.isVisible()

    _answer_and_wait(qtbot, controller.popup, "via the controller")
    with qtbot.waitSignal(controller.open_in_main_window, timeout=2000) as handed:
        controller.popup.hand_over()
    assert handed.args == ["via the controller", "ok", "complete"]
    controller.shutdown()


def test_the_popup_keeps_its_size_while_the_answer_streams_so_stop_stays_put(qtbot, make_client):
    class Paced(ScriptedEngine):  # one paragraph every 20 ms: the answer grows on screen
        def stream(self, request, cancel):
            for event in super().stream(request, cancel):
                time.sleep(0.02)
                yield event

    lines = [AnswerDelta(f"Line {n} of a long answer that keeps coming.\n\n") for n in range(40)]
    engine = Paced(lines, hold_until_cancelled=True)
    client = make_client(engine)
    popup = _popup(qtbot, client)
    popup.popup_at(QRect())
    job = popup.ask("Write a lot")
    qtbot.waitUntil(lambda: popup.stop_button.isVisible() and bool(popup.answer), timeout=5000)
    qtbot.wait(50)
    height, stop_at = popup.height(), popup.stop_button.mapToGlobal(popup.stop_button.rect().center())

    qtbot.waitUntil(lambda: popup.answer.count("Line") == 40, timeout=5000)
    qtbot.wait(150)  # rendered
    assert popup.height() == height
    assert popup.stop_button.mapToGlobal(popup.stop_button.rect().center()) == stop_at
    bar = popup._scroll.verticalScrollBar()
    assert bar.maximum() > 0  # the long answer scrolls inside the popup
    with qtbot.waitSignal(job.finished, timeout=5000):
        popup.stop()


def test_a_stopped_answer_is_handed_over_as_stopped(qtbot, make_client):
    engine = ScriptedEngine([AnswerDelta("Half")], hold_until_cancelled=True)
    client = make_client(engine)
    popup = _popup(qtbot, client)
    popup.popup_at(QRect())
    job = popup.ask("Stop me")
    qtbot.waitUntil(lambda: popup.answer == "Half", timeout=5000)
    with qtbot.waitSignal(job.finished, timeout=5000):
        popup.stop()
    with qtbot.waitSignal(popup.open_in_main_window, timeout=2000) as handed:
        popup.hand_over()
    assert handed.args == ["Stop me", "Half", "stopped"]


def test_the_window_menu_opens_quick_ask_without_a_tray(qtbot, make_client, tmp_path, monkeypatch):
    from app.chat.store import ConversationStore
    from app.gui import _attach_quick_ask
    from app.settings import Settings
    from app.window.main_window import MainWindow
    from PySide6.QtWidgets import QApplication

    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path))
    client = make_client(ScriptedEngine([AnswerDelta("ok")]))
    window = MainWindow(ConversationStore(tmp_path / "chats.db"), client, Settings())
    qtbot.addWidget(window)
    quick_ask = _attach_quick_ask(QApplication.instance(), window, client, Settings())
    assert quick_ask is not None
    try:
        window.menus.quick_ask_action.trigger()
        qtbot.waitUntil(quick_ask.popup.isVisible, timeout=2000)
    finally:
        quick_ask.shutdown()


def test_one_click_sends_the_clipboard_as_the_questions_context(qtbot, make_client):
    engine = ScriptedEngine([AnswerDelta("It says hello.")])
    client = make_client(engine)
    popup = _popup(qtbot, client)
    popup.popup_at(QRect())
    QGuiApplication.clipboard().setText("Bonjour tout le monde")
    qtbot.mouseClick(popup.clipboard_button, Qt.MouseButton.LeftButton)
    assert popup.clipboard_button.isChecked() and "clipboard" in popup.status_label.text()
    _answer_and_wait(qtbot, popup, "What does this say?")
    [request] = engine.requests
    content = request.messages[-1].content
    assert content.startswith("What does this say?") and "Bonjour tout le monde" in content
    assert "tok/s" in popup.status_label.text()  # the speed is shown when it ends


# --- the platform layer (app/tray.py): what can be checked without a Mac ---------------------

def test_shortcuts_map_to_carbon_key_codes_and_modifiers(qapp):
    from app.quick_ask.tray import MacHotKey, parse_shortcut

    option, cmd, shift, control = 1 << 11, 1 << 8, 1 << 9, 1 << 12
    assert parse_shortcut("Alt+Space") == MacHotKey(49, option)
    assert parse_shortcut("Ctrl+Shift+K") == MacHotKey(40, cmd | shift)  # Qt's Ctrl is Command
    assert parse_shortcut("Meta+Alt+A") == MacHotKey(0, control | option)
    assert parse_shortcut("F5") == MacHotKey(96, 0)


@pytest.mark.parametrize(
    "shortcut, problem",
    [("Space", "needs Command, Option or Control"), ("Shift+A", "needs Command"),
     ("Alt+Left", "cannot be used"), ("Alt+A, Alt+B", "single key combination"), ("", "single")],
)
def test_unusable_shortcuts_are_refused_with_a_reason(qapp, shortcut, problem):
    from app.quick_ask.tray import parse_shortcut

    with pytest.raises(ValueError, match=problem):
        parse_shortcut(shortcut)


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the non-macOS fallback")
def test_platform_calls_decline_cleanly_off_macos(qtbot, make_client):
    from app.quick_ask.tray import set_dock_icon_visible

    assert set_dock_icon_visible(False) is False
    controller = QuickAskController(make_client(load=False), use_menu_bar_icon=False)
    qtbot.addWidget(controller.popup)
    assert controller.set_global_shortcut("Alt+Space") == "Global shortcuts are available on macOS only."
    assert "needs Command" in controller.set_global_shortcut("Space")
    assert controller.set_global_shortcut("") == ""
    assert not controller.has_menu_bar_icon()
    controller.shutdown()


def test_shipped_icons_load(qapp):
    from app.quick_ask.tray import app_icon, menu_bar_icon

    icon = app_icon()
    assert not icon.isNull()
    assert {size.width() for size in icon.availableSizes()} >= {16, 32, 256, 512}
    tray = menu_bar_icon()
    assert tray.isMask()  # a template image: macOS recolours it for light and dark menu bars
    assert not tray.pixmap(22, 22).isNull()
