"""The main window end to end: a real random-weight model on the real worker thread.

Generation uses argmax (through the controller's job-builder hook) so answers are long and
repeatable; a "slow" variant sleeps between the engine's events so a test can act mid-answer.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from app.chat.turns import TurnContext, TurnJob
from app.window.main_window import MainWindow
from app.chat.message_view import MessageView
from app.chat.rendering import RenderColors
from app.settings import Settings
from app.chat.store import DATABASE_NAME, Attachment, ConversationStore, StoredMessage
from app.worker.worker import WorkerClient
from tests.support.workers import loaded_worker
from mlx_backend.errors import RequestError
from mlx_backend.events import (
    AnswerDelta,
    Finished,
    GenerationStats,
    PrefillProgress,
    SamplingParams,
    ThinkingDelta,
)

ARGMAX = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


@pytest.fixture(scope="module")
def worker(qapp, tiny_checkpoint: Path):
    from mlx_backend.generation.engine import Engine
    from mlx_backend.generation.prefill import PrefillPolicy

    # Small prefill chunks so a long prompt reports progress (and can be stopped) chunk by chunk.
    client = loaded_worker(
        qapp, tiny_checkpoint,
        engine_loader=lambda path, progress: Engine.load(path, progress, prefill=PrefillPolicy.fixed(32)),
    )
    yield client
    assert client.shutdown(10000)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "data"


class Builder:
    """A job builder: argmax chat with a token limit, optionally slowed down; records requests."""

    def __init__(self, max_tokens: int = 24, delay_s: float = 0.0, prefill_delay_s: float = 0.0) -> None:
        self.max_tokens = max_tokens
        self.delay_s = delay_s
        self.prefill_delay_s = prefill_delay_s
        self.contexts: list[TurnContext] = []
        self.on_event: Optional[Any] = None  # also told of each event of the turns' jobs

    def _watch(self, handle) -> None:
        if self.on_event is not None:
            handle.event.connect(self.on_event)

    def __call__(self, context: TurnContext) -> TurnJob:
        self.contexts.append(context)
        request = dataclasses.replace(context.request, sampling=ARGMAX, max_tokens=self.max_tokens, enable_thinking=False)
        delay, prefill_delay = self.delay_s, self.prefill_delay_s

        def job(engine, cancel) -> Iterator[object]:
            for event in engine.stream(request, cancel):
                if isinstance(event, PrefillProgress) and event.done < event.total:
                    time.sleep(prefill_delay)
                elif isinstance(event, AnswerDelta):
                    time.sleep(delay)
                yield event

        return TurnJob(job, on_submitted=self._watch)


def open_window(qtbot, worker: WorkerClient, data_dir: Path, builder: Optional[Any] = None) -> MainWindow:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = ConversationStore(data_dir / DATABASE_NAME)
    window = MainWindow(store, worker, Settings())
    window.sidebar.confirm_delete = False
    if builder is not None:
        window.chat.set_job_builder(builder)
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.show()
    qtbot.waitExposed(window)
    return window


def last_assistant(window: MainWindow):
    return [v for v in window.transcript.views if v.role == "assistant"][-1]


def wait_idle(qtbot, window: MainWindow, timeout: int = 20000) -> None:
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=timeout)


def type_and_send(qtbot, window: MainWindow, text: str) -> None:
    window.composer.edit.setFocus()
    qtbot.keyClicks(window.composer.edit, text)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)


def test_a_message_streams_into_the_transcript_and_is_stored(qtbot, worker, data_dir) -> None:
    builder = Builder(max_tokens=60, delay_s=0.004)
    window = open_window(qtbot, worker, data_dir, builder)
    seen_lengths: list[int] = []
    builder.on_event = lambda e: seen_lengths.append(len(last_assistant(window).answer_text))
    type_and_send(qtbot, window, "Hello there")
    assert window.composer.text == "" and window.composer.generating
    wait_idle(qtbot, window)
    view = last_assistant(window)
    # Several partial states were on screen before the end: it streamed.
    growing = sorted(set(seen_lengths))
    assert len(growing) >= 3 and growing[-1] == len(view.answer_text) > 0
    assert view.body.toPlainText().strip() != ""
    user, answer = window.store.messages(window.chat.conversation_id)
    assert (user.role, user.content) == ("user", "Hello there")
    assert answer.content == view.answer_text and answer.status == "complete"
    assert answer.stats["generation_tokens"] == 60 and answer.stats["finish_reason"] == "length"
    assert window.sidebar.titles() == ["Hello there"]
    assert "tok/s" in window.status_panel.speed_label.text()
    assert window.status_panel.context_label.text().startswith("Context ")
    assert not window.composer.generating


def test_shift_return_adds_a_line_instead_of_sending(qtbot, worker, data_dir) -> None:
    window = open_window(qtbot, worker, data_dir, Builder())
    qtbot.keyClicks(window.composer.edit, "line one")
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(window.composer.edit, "line two")
    assert window.composer.text == "line one\nline two"
    assert window.transcript.views == [] and not window.chat.generating


def test_stop_mid_answer_keeps_the_partial_answer_marked_interrupted(qtbot, worker, data_dir) -> None:
    window = open_window(qtbot, worker, data_dir, Builder(max_tokens=2000, delay_s=0.01))
    type_and_send(qtbot, window, "Tell me a long story")
    store = window.store
    qtbot.waitUntil(lambda: len(last_assistant(window).answer_text) > 20, timeout=10000)
    answer_id = last_assistant(window).message_id
    # Saved while streaming (about every second), already labelled interrupted.
    qtbot.waitUntil(lambda: store.message(answer_id).content != "", timeout=5000)
    assert store.message(answer_id).status == "interrupted"
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)  # the Stop button now
    wait_idle(qtbot, window)
    view = last_assistant(window)
    stored = store.message(answer_id)
    assert stored.status == "interrupted" and stored.stats["finish_reason"] == "cancelled"
    assert stored.content == view.answer_text
    assert 0 < stored.stats["generation_tokens"] < 2000
    assert view.note.isVisible() and view.note.text() == "Stopped"


def test_stop_during_prefill_shows_progress_and_stops_before_answering(qtbot, worker, data_dir) -> None:
    window = open_window(qtbot, worker, data_dir, Builder(max_tokens=50, prefill_delay_s=0.05))
    window.composer.set_text("word " * 400)  # a long prompt: many 32-token prefill chunks
    window.composer.submit()
    view = last_assistant(window)
    qtbot.waitUntil(lambda: view.prefill_bar.maximum() > 0 and view.prefill_bar.value() > 0, timeout=10000)
    assert view.prefill_row.isVisible() and "Reading" in view.prefill_label.text()
    window.menus.stop_action.trigger()  # Model > Stop (Cmd+.)
    wait_idle(qtbot, window)
    stored = window.store.message(view.message_id)
    assert stored.status == "interrupted" and stored.content == ""
    assert stored.stats["finish_reason"] == "cancelled" and stored.stats["generation_tokens"] == 0
    assert view.note.text() == "Stopped before answering" and not view.prefill_row.isVisible()


def test_regenerate_shows_a_new_answer_and_keeps_the_old_as_a_version(qtbot, worker, data_dir) -> None:
    builder = Builder(max_tokens=8)
    window = open_window(qtbot, worker, data_dir, builder)
    type_and_send(qtbot, window, "Pick a number")
    wait_idle(qtbot, window)
    first = last_assistant(window)
    first_id, first_text = first.message_id, first.answer_text
    assert first.regenerate_button.isVisibleTo(first)
    builder.max_tokens = 16
    qtbot.mouseClick(first.regenerate_button, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, window)
    messages = window.store.messages(window.chat.conversation_id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].id != first_id and messages[1].version_ids == (first_id, messages[1].id)
    assert window.store.message(first_id).content == first_text  # kept: ‹ 1/2 › goes back to it
    assert messages[1].stats["generation_tokens"] == 16
    # Argmax: the new answer continues the same way, only longer.
    assert messages[1].content.startswith(first_text) and len(messages[1].content) > len(first_text)
    assert [v.message_id for v in window.transcript.views] == [m.id for m in messages]
    # The request for the regeneration held the same history, without the replaced answer.
    assert [m.content for m in builder.contexts[1].request.messages] == ["Pick a number"]


def test_edit_and_resend_replaces_the_message_and_what_followed(qtbot, worker, data_dir) -> None:
    builder = Builder(max_tokens=6)
    window = open_window(qtbot, worker, data_dir, builder)
    type_and_send(qtbot, window, "What is 2+2?")
    wait_idle(qtbot, window)
    type_and_send(qtbot, window, "And 3+3?")
    wait_idle(qtbot, window)
    first_user = window.transcript.views[0]
    assert first_user.role == "user"
    first_user.start_editing()
    assert first_user.is_editing
    first_user.edit_box.setPlainText("What is 5+5?")
    first_user._submit_edit()
    wait_idle(qtbot, window)
    messages = window.store.messages(window.chat.conversation_id)
    assert [(m.role, m.content) for m in messages][0] == ("user", "What is 5+5?")
    assert [m.role for m in messages] == ["user", "assistant"]
    assert [m.content for m in builder.contexts[-1].request.messages] == ["What is 5+5?"]
    assert window.transcript.views[0].body.toPlainText() == "What is 5+5?"


def test_conversations_survive_an_app_restart(qtbot, worker, data_dir) -> None:
    window = open_window(qtbot, worker, data_dir, Builder(max_tokens=12))
    type_and_send(qtbot, window, "Remember me")
    wait_idle(qtbot, window)
    conversation_id = window.chat.conversation_id
    answer = last_assistant(window).answer_text
    window.close()
    window.store.close()

    again = open_window(qtbot, worker, data_dir)
    assert again.sidebar.titles() == ["Remember me"]
    again.sidebar.list.setCurrentRow(0)
    assert again.chat.conversation_id == conversation_id
    user, assistant = again.transcript.views
    assert user.body.toPlainText() == "Remember me"
    assert assistant.answer_text == answer and assistant.body.toPlainText().strip() != ""


# ------------------------------------------------------------ scripted jobs on the real worker


def scripted(*events: object, delay_s: float = 0.0):
    def builder(context: TurnContext):
        def job(engine, cancel):
            for event in events:
                time.sleep(delay_s)
                yield event

        return TurnJob(job)

    return builder


STATS = GenerationStats(12, 0, 9, 0.05, 240.0, 55.0, 0.1)


def test_thinking_is_shown_apart_from_the_answer_and_stored_apart(qtbot, worker, data_dir) -> None:
    window = open_window(
        qtbot,
        worker,
        data_dir,
        scripted(
            ThinkingDelta("The user asks for 2+2. "),
            ThinkingDelta("That is 4."),
            AnswerDelta("The answer is **4**."),
            Finished("stop", STATS),
            delay_s=0.04,
        ),
    )
    type_and_send(qtbot, window, "What is 2+2?")
    view = last_assistant(window)
    qtbot.waitUntil(lambda: view.thinking.isVisible() and view.thinking.expanded, timeout=5000)
    wait_idle(qtbot, window)
    assert view.thinking.text == "The user asks for 2+2. That is 4."
    assert view.answer_text == "The answer is **4**."
    assert "2+2" not in view.body.toPlainText() and view.body.toPlainText().strip() == "The answer is 4."
    # Collapsed once the answer started; the header says how long it thought.
    assert not view.thinking.expanded and view.thinking.header.text().startswith("Thought for")
    view.thinking.header.click()
    assert view.thinking.expanded and view.thinking.body.toPlainText() == view.thinking.text
    stored = window.store.message(view.message_id)
    assert (stored.thinking, stored.content) == ("The user asks for 2+2. That is 4.", "The answer is **4**.")


def test_a_failed_answer_shows_the_reason_and_is_stored_as_an_error(qtbot, worker, data_dir) -> None:
    def builder(context):
        def job(engine, cancel):
            yield AnswerDelta("Par")
            raise RequestError("This conversation is too long for the model.")

        return TurnJob(job)

    window = open_window(qtbot, worker, data_dir, builder)
    type_and_send(qtbot, window, "Hi")
    wait_idle(qtbot, window)
    view = last_assistant(window)
    assert view.note.isVisible() and view.note.text() == "This conversation is too long for the model."
    stored = window.store.message(view.message_id)
    assert stored.status == "error" and stored.error == "This conversation is too long for the model."
    # A failed answer is not sent back to the model as something it said.
    request = window.chat.build_request(window.store.messages(window.chat.conversation_id))
    assert [m.role for m in request.messages] == ["user"]


def test_thinking_toggle_is_offered_only_for_hybrid_models(qtbot, data_dir) -> None:
    @dataclasses.dataclass
    class Info:
        thinking_mode: str
        name: str = "m"
        context_length: int = 4096
        weights_bytes: int = 0

    class Engine:
        def __init__(self, mode: str) -> None:
            self.info = Info(mode)

    client = WorkerClient(engine_loader=lambda path, progress: Engine(path))
    try:
        window = open_window(qtbot, client, data_dir)
        for mode, offered in (("hybrid", True), ("never", False), ("always", False)):
            with qtbot.waitSignal(client.modelLoaded, timeout=5000):
                client.load_model(mode)
            assert window.thinking_toggle.isVisible() is offered, mode
            assert window.menus.thinking_action.isEnabled() is offered
            request = window.chat.build_request([])
            # Unset: the model's own default decides (sent as None) until the user flips the switch.
            assert request.enable_thinking == (window.settings.thinking_choice if offered else None)
        with qtbot.waitSignal(client.modelLoaded, timeout=5000):
            client.load_model("hybrid")
        window.thinking_toggle.click()
        assert window.settings.thinking_enabled is False and window.chat.build_request([]).enable_thinking is False
    finally:
        assert client.shutdown(5000)


def test_sidebar_new_rename_search_and_delete(qtbot, worker, data_dir) -> None:
    window = open_window(qtbot, worker, data_dir, Builder(max_tokens=4))
    for text in ("Python lists", "Kyoto trip"):
        window.menus.new_chat_action.trigger()
        type_and_send(qtbot, window, text)
        wait_idle(qtbot, window)
    assert window.sidebar.titles() == ["Kyoto trip", "Python lists"]
    kyoto = window.chat.conversation_id

    window.menus.new_chat_action.trigger()  # Cmd+N: an empty chat, stored only once something is sent
    assert window.chat.conversation_id is None and window.transcript.views == []
    assert len(window.store.conversations()) == 2

    window.sidebar.rename(kyoto, "Kyoto in April")
    assert window.store.conversation(kyoto).title == "Kyoto in April"
    window.sidebar.search.setText("python")
    qtbot.waitUntil(lambda: window.sidebar.titles() == ["Python lists"], timeout=2000)
    window.sidebar.search.setText("")
    qtbot.waitUntil(lambda: len(window.sidebar.titles()) == 2, timeout=2000)

    window.sidebar.select(kyoto)
    window.chat.open_conversation(kyoto)
    assert window.windowTitle().startswith("Kyoto in April")
    assert window.sidebar.delete(kyoto)
    assert window.store.conversation(kyoto) is None and window.sidebar.titles() == ["Python lists"]
    assert window.chat.conversation_id is None and window.transcript.views == []


# --- the status bar while an answer streams; how user messages are laid out ------------------


@dataclasses.dataclass(frozen=True)
class PacedInfo:
    name: str = "Qwen3-8B-4bit"
    context_length: int = 40960
    thinking_mode: str = "hybrid"
    weights_bytes: int = 4_600_000_000
    quantization_bits: int = 4


class PacedEngine:
    """A 300-token prompt, then one answer token every 10 ms until released."""

    info = PacedInfo()

    def __init__(self) -> None:
        self.release = threading.Event()

    def stream(self, request, cancel) -> Iterator[object]:
        yield PrefillProgress(0, 300, None)
        yield PrefillProgress(300, 300, 0.0)
        tokens = 0
        while not (cancel.is_set() or self.release.is_set()):
            yield AnswerDelta("tok ")
            tokens += 1
            time.sleep(0.01)
        yield Finished("stop", GenerationStats(300, 0, tokens, 0.05, 3000.0, 95.0, 5.1))


def _context_used(window: MainWindow) -> int:
    text = window.status_panel.context_label.text()  # "Context 1,234 / 40,960"
    return int(text.split()[1].replace(",", "")) if text.startswith("Context ") else 0


def test_the_status_bar_names_the_mode_and_updates_live_while_streaming(qtbot, data_dir) -> None:
    engine = PacedEngine()
    client = WorkerClient(engine_loader=lambda path, progress: engine)
    try:
        with qtbot.waitSignal(client.modelLoaded, timeout=10000):
            client.load_model("mlx-community/Qwen3-8B-4bit")
        window = open_window(qtbot, client, data_dir)
        panel = window.status_panel
        assert panel.model_label.text() == "Qwen3-8B-4bit  \u00b7  4-bit  \u00b7  hybrid thinking"
        assert panel.context_label.text() == "40,960-token context"  # nothing used yet

        type_and_send(qtbot, window, "Hello")
        # Mid-answer: the context counts the prompt and the tokens so far, and speed shows.
        qtbot.waitUntil(lambda: _context_used(window) > 300 and "tok/s" in panel.speed_label.text(), timeout=10000)
        assert window.chat.generating
        first = _context_used(window)
        qtbot.waitUntil(lambda: _context_used(window) > first, timeout=10000)  # it keeps moving
        assert 0 < float(panel.speed_label.text().split()[0]) < 1000
        assert panel.ttft_label.text().startswith("TTFT ")

        engine.release.set()
        wait_idle(qtbot, window)
        answer = last_assistant(window)
        tokens = answer.answer_text.count("tok")
        # The engine's exact figures replace the live estimates at the end.
        assert panel.speed_label.text() == "95.0 tok/s"
        assert panel.context_label.text() == f"Context {300 + tokens:,} / 40,960"
        assert panel.memory_label.text() == "Weights 4.6 GB, peak 5.1 GB"
    finally:
        assert client.shutdown(10000)


def _user_view(qtbot, content: str, attachments=()) -> MessageView:
    message = StoredMessage(1, "c", "user", content, attachments=tuple(attachments))
    view = MessageView(message, RenderColors.from_palette(QApplication.palette()))
    qtbot.addWidget(view)
    view.resize(700, view.sizeHint().height())
    view.show()
    qtbot.waitExposed(view)
    return view


def test_a_message_of_attachments_alone_is_just_its_chips(qtbot) -> None:
    report = Attachment("Annual-Report-2024.pdf", "/tmp/Annual-Report-2024.pdf", details={"pages": 160})
    view = _user_view(qtbot, "", [report])
    [chip] = view.chips
    assert chip.text() == "Annual-Report-2024.pdf"
    assert view.body.isHidden()  # no empty text line under the chip
    # The bubble is wide enough for the whole chip (not squeezed to the width of no text) ...
    assert view.bubble.width() >= chip.sizeHint().width() + 2 * 14
    assert chip.width() >= chip.sizeHint().width()
    # ... and no taller than the chip and its padding.
    assert view.bubble.height() <= chip.sizeHint().height() + 2 * 9 + 4


def test_copy_and_edit_sit_beside_a_question_not_under_it(qtbot) -> None:
    view = _user_view(qtbot, "What is the capital of France?")
    view.actions.setVisible(True)  # as on hover
    qtbot.wait(20)
    bubble, actions = view.bubble.geometry(), view.actions.geometry()
    assert actions.right() <= bubble.left() and actions.bottom() <= bubble.bottom() + 1
    # So the message is only as tall as its bubble: the answer follows closely.
    assert view.sizeHint().height() <= bubble.height() + 2 * 6 + 1
    # While it is edited, the editor takes the bubble's place, with nothing left below it.
    view.start_editing()
    editor = view.edit_box.parentWidget()
    assert view.sizeHint().height() <= editor.sizeHint().height() + 2 * 6 + 1
    view.stop_editing()
    assert view.bubble.isVisibleTo(view) and not view.is_editing


def test_the_answer_completes_at_finished_while_the_job_still_tidies_its_cache(qtbot, worker, data_dir) -> None:
    # The engine keeps its job running after Finished to re-encode the reply for the next turn;
    # the user must get the composer back (and the answer saved) without waiting for that.
    release = threading.Event()

    def builder(context):
        def job(engine, cancel):
            yield AnswerDelta("Done.")
            yield Finished("stop", STATS)
            release.wait(10)  # stands in for the engine's post-answer cache work

        return TurnJob(job)

    window = open_window(qtbot, worker, data_dir, builder)
    try:
        type_and_send(qtbot, window, "Hi")
        wait_idle(qtbot, window, timeout=5000)
        assert worker.current_job_id is not None, "the job should still be running"
        assert not window.composer.generating
        stored = window.store.message(last_assistant(window).message_id)
        assert (stored.content, stored.status) == ("Done.", "complete")
    finally:
        release.set()
    qtbot.waitUntil(lambda: worker.current_job_id is None, timeout=5000)
