"""Dropping documents on the main window: plan panel, progress, streamed summary, follow-ups,
cancel, refused files. Real MainWindow, real worker thread, real Engine on a tiny checkpoint
whose config allows 1,024 positions (so a 20-page PDF needs map-reduce)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QTextDocument
from PySide6.QtWidgets import QApplication, QWidget

from app.documents.controller import DocumentController
from app.documents.drop import DocumentDropFilter, local_file_paths
from app.documents.widgets import AttachmentChip, SummaryProgressPanel, duration_words
from app.window.main_window import MainWindow
from app.settings import Settings
from app.chat.store import ConversationStore
from app.worker.worker import WorkerClient
from mlx_backend.documents.reading import Document
from mlx_backend.generation.engine import Engine
from mlx_backend.generation.prefill import PrefillPolicy
from mlx_backend.events import AnswerDelta, ChatMessage, Finished, PrefillProgress
from mlx_backend.documents.summary import SummaryOptions, SummaryProgress
from tests.support.checkpoints import write_random_checkpoint
from tests.support.documents import sample_paragraph, write_long_pdf, write_pdf

TIMEOUT_MS = 60_000
# Tiny answers keep random-weight generation short; no YaRN so long files go map-reduce.
OPTIONS = SummaryOptions(answer_tokens=24, part_answer_tokens=12, allow_yarn=False, seed=0)
CHAT_ANSWER_TOKENS = 48


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("docs-app"), max_position_embeddings=1024)


class GatedEngine:
    """The real engine, paused once mid-prefill until the request is cancelled: lets a GUI test
    press Cancel at a known point instead of racing a prefill that takes milliseconds."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.gated = threading.Event()
        self.last_events: list[object] = []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, cancel=None):
        events = self._engine.stream(request, cancel)

        def gated():
            for event in events:
                self.last_events.append(event)
                yield event
                if isinstance(event, PrefillProgress) and 0 < event.done < event.total and not self.gated.is_set():
                    self.gated.set()
                    cancel.wait(30)

        return gated()


class RecordingEngine:
    """The real engine, with every request it runs written down. Chat answers are capped at
    CHAT_ANSWER_TOKENS: a random-weight model otherwise rambles until the context is nearly
    full, and whether a follow-up still fits would depend on the sampler's luck."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.requests = []
        self.answers: list[str] = []  # the answer text of each request

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, cancel=None):
        self.requests.append(request)
        self.answers.append("")
        index = len(self.answers) - 1
        capped = dataclasses.replace(request, max_tokens=min(request.max_tokens, CHAT_ANSWER_TOKENS))
        for event in self._engine.stream(capped, cancel):
            if isinstance(event, AnswerDelta):
                self.answers[index] += event.text
            yield event


class Harness:
    def __init__(self, qtbot, tmp_path: Path, checkpoint: Path, *, gate: bool = False, load: bool = True) -> None:
        self.qtbot = qtbot
        self.gate: GatedEngine | None = None
        self.recorder: RecordingEngine | None = None

        def loader(path, progress):
            engine = Engine.load(path, prefill=PrefillPolicy.fixed(64))
            if gate:
                self.gate = GatedEngine(engine)
                return self.gate
            self.recorder = RecordingEngine(engine)
            return self.recorder

        self.worker = WorkerClient(engine_loader=loader, batch_interval_s=0.0)
        self.store = ConversationStore(tmp_path / "chats.db")
        settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        settings.thinking_enabled = False
        self.window = MainWindow(self.store, self.worker, settings)
        qtbot.addWidget(self.window)
        self.window.show()
        self.controller = DocumentController(
            self.window.chat, self.window.composer, self.worker, drop_targets=(self.window.transcript,),
            place_panel=self.window.add_bottom_panel, system_prompt=lambda: settings.system_prompt,
            options=OPTIONS, parent=self.window)
        self.checkpoint = checkpoint
        if load:
            self.load()

    def load(self) -> None:
        with self.qtbot.waitSignal(self.worker.modelLoaded, timeout=TIMEOUT_MS):
            self.worker.load_model(str(self.checkpoint))

    def close(self) -> None:
        self.worker.shutdown()
        self.store.close()

    def wait_for_plan(self):
        self.qtbot.waitUntil(lambda: self.controller.plan_panel.plan is not None, timeout=TIMEOUT_MS)
        return self.controller.plan_panel.plan

    def messages(self):
        return self.store.messages(self.window.chat.conversation_id)


@pytest.fixture
def harness(qtbot, tmp_path, checkpoint):
    made: list[Harness] = []

    def make(**kwargs) -> Harness:
        made.append(Harness(qtbot, tmp_path, checkpoint, **kwargs))
        return made[-1]

    yield make
    for h in made:
        h.close()


def mime_for(paths) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def drop_files(widget: QWidget, paths) -> tuple[bool, bool]:
    """Drag ``paths`` over ``widget`` and drop them, as Finder would. Returns (enter, drop) accepted."""
    return drag_and_drop(widget, mime_for(paths))


def drag_and_drop(widget: QWidget, mime: QMimeData) -> tuple[bool, bool]:
    # Qt routes a drop only to a widget that accepted the drag's enter event, as in a real drag.
    center = widget.rect().center()
    enter = QDragEnterEvent(center, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    drop = QDropEvent(QPointF(center), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return enter.isAccepted(), drop.isAccepted()


def _top(widget: QWidget) -> int:
    return widget.mapTo(widget.window(), QPoint(0, 0)).y()


def text_file(tmp_path: Path, name: str, paragraphs: int, words: int = 30) -> Path:
    path = tmp_path / name
    path.write_text("\n\n".join(sample_paragraph(n, words=words) for n in range(paragraphs)), encoding="utf-8")
    return path


# --- the whole flow ---------------------------------------------------------------------------


def test_pdf_dropped_on_the_transcript_is_planned_summarized_and_streamed(harness, tmp_path):
    h = harness()
    pdf = write_long_pdf(tmp_path / "report.pdf", page_count=20)
    entered, dropped = drop_files(h.window.transcript.viewport(), [pdf])
    assert entered and dropped

    plan = h.wait_for_plan()
    panel = h.controller.plan_panel
    assert panel.isVisible() and panel.start_button.isEnabled()
    assert plan.strategy == "map_reduce" and len(plan.parts) >= 3
    assert "Map-reduce" in panel.status.text()
    shown = QTextDocument()
    shown.setHtml(panel.plan_text.text())  # the description as a key/value table
    shown_text = " ".join(shown.toPlainText().split())
    for line in plan.description.splitlines():
        key, _, value = line.partition(": ")
        assert key in shown_text and " ".join(value.split()) in shown_text
    assert [a.name for a in h.window.composer.attachments] == ["report.pdf"]
    [chip] = panel.chips
    assert chip.text.endswith(f"report.pdf 20 pages · {plan.document_tokens:,} tokens")

    progress: list[float] = []
    h.controller.progress_panel.progressChanged.connect(progress.append)
    with h.qtbot.waitSignal(h.controller.summaryFinished, timeout=TIMEOUT_MS) as finished:
        h.qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
        h.qtbot.waitUntil(lambda: h.controller.progress_panel.isVisible(), timeout=TIMEOUT_MS)
        assert not panel.isVisible()  # the plan gave way to the progress panel
    assert finished.args[1] == "complete"

    # The bar advanced step by step (every part, then the combine) and never went backwards.
    assert len(progress) >= len(plan.parts)
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert h.controller.progress_panel.step_label.text() == "Summary ready"

    user, assistant = h.messages()
    assert (user.role, user.content, [a.name for a in user.attachments]) == ("user", "", ["report.pdf"])
    assert user.attachments[0].details["pages"] == 20
    assert (assistant.role, assistant.status) == ("assistant", "complete")
    # Only the final (combine) answer streamed into the chat, not the parts' summaries.
    combine = h.recorder.requests[-1]
    assert combine.messages[-1].content.startswith("<summaries>")
    assert assistant.content and assistant.content == h.recorder.answers[-1]
    assert h.window.composer.attachments == []


def test_follow_up_question_is_answered_from_the_cached_document(harness, tmp_path):
    h = harness()
    notes = text_file(tmp_path, "notes.md", paragraphs=3)
    drop_files(h.window.composer.edit.viewport(), [notes])
    plan = h.wait_for_plan()
    assert plan.strategy == "single_pass"
    with h.qtbot.waitSignal(h.controller.summaryFinished, timeout=TIMEOUT_MS):
        h.controller.start()
    h.window.composer.set_text("What does paragraph 2 say?")
    summaries_finished: list[tuple[str, str]] = []
    h.controller.summaryFinished.connect(lambda *args: summaries_finished.append(args))
    with h.qtbot.waitSignal(h.window.chat.turnFinished, timeout=TIMEOUT_MS):
        h.window.composer.submit()
    # The document flow followed only its own summary job: a follow-up is an ordinary chat turn.
    assert summaries_finished == []
    assert h.controller.progress_panel.step_label.text() == "Summary ready"
    messages = h.messages()
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    follow_up = messages[-1]
    assert follow_up.status == "complete", follow_up.error
    # The document prompt went again in place of the short stored message.
    document_turn = h.recorder.requests[-1].messages[0]
    assert document_turn.role == "user" and "Paragraph 2:" in document_turn.content
    document_turn_tokens = plan.documents[0].tokens
    assert follow_up.stats["cached_tokens"] >= document_turn_tokens
    # Only the new turn was prefilled: the summary as history, the question, the turn markers.
    tokenizer = h.recorder.tokenizer
    new_turn = len(tokenizer.encode(messages[1].content)) + len(tokenizer.encode(messages[2].content))
    assert follow_up.stats["prompt_tokens"] - follow_up.stats["cached_tokens"] <= new_turn + 24


def test_regenerate_and_follow_ups_after_a_restart(harness, tmp_path):
    h = harness()
    notes = text_file(tmp_path, "notes.md", paragraphs=3)
    drop_files(h.window.transcript.viewport(), [notes])
    h.wait_for_plan()
    with h.qtbot.waitSignal(h.controller.summaryFinished, timeout=TIMEOUT_MS):
        h.controller.start()
    _, first_answer = h.messages()
    # Regenerate runs the summary job again for the same document message.
    with h.qtbot.waitSignal(h.controller.summaryFinished, timeout=TIMEOUT_MS) as again:
        h.window.chat.regenerate(first_answer.id)
    assert again.args[1] == "complete"
    assert [m.role for m in h.messages()] == ["user", "assistant"] and h.messages()[1].content
    conversation = h.window.chat.conversation_id

    # "Restart": a new window and controller on the same store, nothing in memory.
    restarted = harness()
    restarted.window.chat.open_conversation(conversation)
    restarted.window.composer.set_text("And paragraph 1?")
    with restarted.qtbot.waitSignal(restarted.window.chat.turnFinished, timeout=TIMEOUT_MS):
        restarted.window.composer.submit()
    answer = restarted.store.messages(conversation)[-1]
    assert answer.status == "complete", answer.error
    [request] = restarted.recorder.requests
    assert "Paragraph 1:" in request.messages[0].content  # the file was read again and went with the question
    assert answer.stats["prompt_tokens"] > h.controller.plan_panel.plan.documents[0].tokens

    # With the file gone, a follow-up still gets an answer, from the chat history alone.
    notes.unlink()
    gone = harness()
    gone.window.chat.open_conversation(conversation)
    gone.window.composer.set_text("Anything else?")
    with gone.qtbot.waitSignal(gone.window.chat.turnFinished, timeout=TIMEOUT_MS):
        gone.window.composer.submit()
    last = gone.store.messages(conversation)[-1]
    assert last.status == "complete", last.error
    [request] = gone.recorder.requests
    assert request.messages[0] == ChatMessage("user", "")  # the stored message, no document text
    assert request.messages[-1] == ChatMessage("user", "Anything else?") and request.yarn_factor is None


def test_cancel_mid_prefill_from_the_progress_panel(harness, tmp_path):
    h = harness(gate=True)
    drop_files(h.window.transcript.viewport(), [text_file(tmp_path, "long.txt", paragraphs=3)])
    plan = h.wait_for_plan()
    assert plan.strategy == "single_pass" and plan.prompt_tokens > 5 * 64  # several prefill chunks
    with h.qtbot.waitSignal(h.controller.summaryFinished, timeout=TIMEOUT_MS) as finished:
        h.controller.start()
        h.qtbot.waitUntil(h.gate.gated.is_set, timeout=TIMEOUT_MS)  # the engine is mid-prefill
        panel = h.controller.progress_panel
        h.qtbot.waitUntil(lambda: panel.tracker.stage == SummaryProgress(1, 1, "single"), timeout=TIMEOUT_MS)
        # The panel sits between the transcript and the composer and has the numbers; the
        # answer's own slot only says what is going on (no second reading bar).
        # (once the layout has run: the panel has just been shown, and a loaded machine may
        # not have processed the relayout yet)
        h.qtbot.waitUntil(
            lambda: _top(h.window.transcript) + h.window.transcript.height() <= _top(panel)
            and _top(panel) + panel.height() <= _top(h.window.composer),
            timeout=TIMEOUT_MS,
        )
        view = [v for v in h.window.transcript.views if v.role == "assistant"][-1]
        assert view.prefill_label.text() == "Summarizing\u2026" and view.prefill_bar.isHidden()
        h.qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert finished.args[1] == "cancelled"
    last = h.gate.last_events[-1]
    assert isinstance(last, Finished) and last.reason == "cancelled"
    assert not any(isinstance(e, PrefillProgress) and e.done == e.total > 0 for e in h.gate.last_events)
    assistant = h.messages()[-1]
    assert (assistant.status, assistant.content) == ("interrupted", "")
    assert h.controller.progress_panel.step_label.text() == "Cancelled"


# --- drops and bad files ----------------------------------------------------------------------


def test_refused_files_are_listed_and_the_good_one_is_planned(harness, tmp_path):
    h = harness()
    (tmp_path / "empty.txt").write_bytes(b"")
    scan = write_pdf(tmp_path / "scan.pdf", [[], []], scanned=True)
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    notes = text_file(tmp_path, "notes.md", paragraphs=2)
    drop_files(h.window.composer.edit.viewport(), [tmp_path / "empty.txt", scan, tmp_path / "sheet.xlsx", notes])
    plan = h.wait_for_plan()
    problems = h.controller.plan_panel.problems.text()
    assert "empty.txt is empty." in problems
    assert "scan.pdf has no text layer" in problems
    assert "sheet.xlsx: Excel spreadsheets aren't supported" in problems
    assert [d.name for d in plan.documents] == ["notes.md"]
    assert [a.name for a in h.window.composer.attachments] == ["notes.md"]
    assert h.window.composer.edit.toPlainText() == ""  # the drop did not paste file URLs


def test_only_bad_files_show_why_and_offer_no_start(harness, tmp_path):
    h = harness()
    (tmp_path / "empty.txt").write_bytes(b"")
    drop_files(h.window.transcript.viewport(), [tmp_path / "empty.txt"])
    panel = h.controller.plan_panel
    h.qtbot.waitUntil(lambda: "None of the files" in panel.plan_text.text(), timeout=TIMEOUT_MS)
    assert panel.isVisible() and not panel.start_button.isEnabled()
    assert "empty.txt is empty." in panel.problems.text()
    assert h.window.composer.attachments == []


def test_plan_waits_for_a_model_and_cancel_takes_the_chips_back(harness, tmp_path):
    h = harness(load=False)
    drop_files(h.window.transcript.viewport(), [text_file(tmp_path, "notes.txt", paragraphs=2)])
    panel = h.controller.plan_panel
    h.qtbot.waitUntil(lambda: "Load a model" in panel.plan_text.text(), timeout=TIMEOUT_MS)
    assert not panel.start_button.isEnabled()
    h.load()
    plan = h.wait_for_plan()
    assert plan.documents[0].name == "notes.txt" and panel.start_button.isEnabled()
    h.qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert not panel.isVisible() and h.window.composer.attachments == []


def test_removing_a_chip_replans_with_the_rest(harness, tmp_path):
    h = harness()
    first = text_file(tmp_path, "a.txt", paragraphs=2)
    second = text_file(tmp_path, "b.txt", paragraphs=2)
    drop_files(h.window.transcript.viewport(), [first, second])
    plan = h.wait_for_plan()
    assert [d.name for d in plan.documents] == ["a.txt", "b.txt"]
    h.qtbot.waitUntil(lambda: len(h.controller.plan_panel.chips) == 2)
    chip = h.controller.plan_panel.chips[0]
    h.qtbot.mouseClick(chip.remove_button, Qt.MouseButton.LeftButton)
    h.qtbot.waitUntil(lambda: h.controller.plan_panel.plan is not None
                      and [d.name for d in h.controller.plan_panel.plan.documents] == ["b.txt"], timeout=TIMEOUT_MS)
    assert [a.name for a in h.window.composer.attachments] == ["b.txt"]


def test_drop_filter_takes_only_local_files(qtbot, tmp_path):
    from PySide6.QtWidgets import QScrollArea

    area = QScrollArea()
    qtbot.addWidget(area)
    drops = DocumentDropFilter()
    drops.install(area)
    assert area.viewport() in drops.watched and area.viewport().acceptDrops()
    received: list[list[str]] = []
    drops.filesDropped.connect(received.append)

    text = QMimeData()
    text.setText("just some text")
    web = QMimeData()
    web.setUrls([QUrl("https://example.com/report.pdf")])
    for mime in (text, web):
        enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        enter.ignore()
        QApplication.sendEvent(area.viewport(), enter)
        assert not enter.isAccepted()
    assert local_file_paths(web) == []

    paths = [tmp_path / "a.pdf", tmp_path / "b.txt"]
    mixed = mime_for(paths)
    mixed.setUrls(mixed.urls() + [QUrl("https://example.com/x"), QUrl.fromLocalFile(str(paths[0]))])
    assert drag_and_drop(area.viewport(), mixed) == (True, True)
    assert received == [[str(p) for p in paths]]  # web link dropped, duplicate once, order kept


# --- widgets ---------------------------------------------------------------------------------


def test_attachment_chip_shows_pages_and_tokens(qtbot):
    document = Document(name="report.pdf", path=Path("/tmp/report.pdf"), kind="pdf", text="x" * 1234, pages=100)
    chip = AttachmentChip(document)
    qtbot.addWidget(chip)
    assert chip.text.endswith("report.pdf 100 pages · 1,234 characters")
    chip.set_document(document.with_tokens(48210))
    assert chip.text.endswith("report.pdf 100 pages · 48,210 tokens")
    assert chip.toolTip() == "/tmp/report.pdf"


def test_progress_panel_follows_parts_prefill_and_eta(qtbot):
    now = [100.0]
    panel = SummaryProgressPanel(clock=lambda: now[0])
    qtbot.addWidget(panel)
    panel.show()
    moves: list[float] = []
    panel.progressChanged.connect(moves.append)

    panel.feed(SummaryProgress(1, 4, "map"))
    panel.feed(PrefillProgress(0, 800, None))
    now[0] += 2
    panel.feed(PrefillProgress(400, 800, 2.0))
    assert panel.step_label.text() == "Summarizing part 1 of 4"
    assert panel.prefill_bar.isVisible() and panel.prefill_label.text() == "Reading the prompt: 50%, about 2 s left"
    assert panel.fraction == pytest.approx(0.5 / 5, abs=1e-3)
    assert panel.eta_label.text() == "about 18 s left"  # 2 s for a tenth of the work
    panel.feed(SummaryProgress(3, 4, "map"))
    assert panel.fraction == pytest.approx(2 / 5, abs=1e-3)
    panel.feed(SummaryProgress(4, 4, "combine"))
    panel.feed(PrefillProgress(100, 100, 0.0))
    assert panel.step_label.text() == "Combining the part summaries"
    assert panel.fraction == pytest.approx(1.0)
    assert moves == sorted(moves) and len(moves) == 4
    panel.finish("Summary ready")
    assert panel.step_label.text() == "Summary ready" and not panel.cancel_button.isEnabled()
    assert (duration_words(3725), duration_words(75), duration_words(0.4)) == ("1 h 02 min", "1 min 15 s", "less than a second")


def test_a_dropped_folder_plans_the_documents_inside_and_says_what_was_left(harness, tmp_path):
    from tests.support.docx_parts import p, write_docx

    h = harness()
    folder = tmp_path / "Minutes"
    (folder / "2024").mkdir(parents=True)
    text_file(folder, "agenda.md", paragraphs=2)
    text_file(folder / "2024", "march.txt", paragraphs=2)
    bad_cell = "<w:tc><w:tcPr><w:gridSpan w:val='x'/></w:tcPr>" + p("lost") + "</w:tc>"
    write_docx(folder / "budget.docx", p("Budget for the year.") + f"<w:tbl><w:tr>{bad_cell}</w:tr></w:tbl>")
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "empty.txt").write_bytes(b"")
    drop_files(h.window.transcript.viewport(), [folder])
    plan = h.wait_for_plan()
    assert [d.name for d in plan.documents] == ["march.txt", "agenda.md", "budget.docx"]
    panel = h.controller.plan_panel
    problems = panel.problems.text()
    assert "Folder Minutes: 3 documents read, 1 file refused, 1 file skipped, 1 hidden file left out." in problems
    assert "empty.txt is empty." in problems
    assert "photo.png (in Minutes) was skipped: images aren't supported." in problems
    # How budget.docx was read is in the plan itself.
    assert "Note on budget.docx: Some of the document could not be read and was skipped: one table cell." \
        in plan.description
    assert "budget.docx" in panel.plan_text.text() and "one table cell" in panel.plan_text.text()
    assert "Documents: 3 documents (" in plan.description
