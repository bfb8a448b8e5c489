"""Quick Ask: a one-line question from the menu bar, answered in a small popup.

``QuickAskPopup`` is the whole feature as a widget (testable without a tray host): type a
question, press Return, and the answer streams in underneath as safely rendered Markdown.
It runs on the app's shared ``WorkerClient``, so it uses the model the main window loaded
and waits its turn behind the main window's jobs (the worker is first in, first out).

``QuickAskController`` (``app/quick_ask/controller.py``) adds the thin platform layer (``tray.py``): the menu-bar icon that
toggles the popup under itself. app/gui.py creates one controller and connects
``open_in_main_window`` to the main window, which continues the exchange as a chat.

Closing the popup (Esc, a click elsewhere) stops a running answer, so a forgotten quick ask
never holds up the main window's queue; what was already written stays in the popup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from PySide6.QtCore import QEvent, QPoint, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QGuiApplication, QKeyEvent, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.chat.rendering import RenderColors, SafeTextView
from app.chat.history import history_messages
from app.worker.handle import JobHandle
from app.worker.protocols import JobRunner
from app.worker.worker import chat_job
from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    ChatRequest,
    Failed,
    Finished,
    PrefillProgress,
    SamplingParams,
    ThinkingDelta,
)

POPUP_WIDTH = 460
# The answer area's height for the whole exchange: the popup never grows while the answer
# streams, so Stop (and then Copy) stay under the pointer; longer answers scroll.
ANSWER_AREA_HEIGHT = 260
CORNER_RADIUS = 12.0
# The streaming view re-renders the whole answer; doing it at most this often keeps a fast
# model from spending the GUI thread on Markdown layout.
RENDER_INTERVAL_MS = 40



@dataclass(frozen=True)
class QuickAskOptions:
    """How a quick question is asked. Quick answers skip thinking unless the model always thinks."""

    enable_thinking: Optional[bool] = False
    max_tokens: int = 2048
    system_prompt: str = ""
    sampling: Optional[SamplingParams] = None  # None: Qwen's recommended preset
    seed: Optional[int] = None

    def request_for(self, question: str, context: str = "") -> ChatRequest:
        content = question
        if context.strip():  # e.g. the clipboard: the text the question is about
            content = f"{question}\n\n<context>\n{context.strip()}\n</context>"
        return ChatRequest(
            messages=history_messages(self.system_prompt, ()) + (ChatMessage("user", content),),
            conversation_id=None,  # one-off question: nothing worth keeping in the prompt cache
            enable_thinking=self.enable_thinking,
            sampling=self.sampling,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )


class QuickAskPopup(QWidget):
    """Frameless, rounded popup: question line, streamed answer, Copy, Open in Main Window."""

    # (question, answer Markdown, "complete" | "stopped"): the main window starts a chat from them.
    open_in_main_window = Signal(str, str, str)
    # Emitted when the popup hides, whatever the reason (Esc, click outside, hand-over).
    closed = Signal()

    def __init__(
        self,
        worker: JobRunner,
        *,
        options: Optional[QuickAskOptions] = None,
        options_provider: Optional[Callable[[], QuickAskOptions]] = None,
        parent: Optional[QWidget] = None,
    ) -> None:
        # Qt.Popup: closes itself on a click outside, like a menu-bar menu. It is a top-level
        # window even with a parent; the parent only ties lifetimes together.
        super().__init__(parent, Qt.WindowType.Popup | Qt.WindowType.FramelessWindowHint)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground)
        self.setObjectName("QuickAskPopup")
        self.setWindowTitle("Quick Ask")
        self.setFixedWidth(POPUP_WIDTH)
        self._worker = worker
        self._options_provider = options_provider or (lambda: options or QuickAskOptions())
        self._job: Optional[JobHandle] = None
        self._question = ""
        self._answer = ""
        self._rendered_answer: Optional[str] = None
        self._finish_reason: Optional[str] = None

        self.question_edit = QLineEdit(self)
        self.question_edit.setObjectName("QuickAskQuestion")
        self.question_edit.setPlaceholderText("Ask Qwen\u2026")
        self.question_edit.setClearButtonEnabled(True)
        self.question_edit.setFrame(False)
        # Part of the popup's surface, not a boxed field (the app stylesheet boxes line edits).
        self.question_edit.setStyleSheet("QLineEdit { background: transparent; border: none; }")
        font = self.question_edit.font()
        font.setPointSizeF(max(font.pointSizeF(), 10.0) * 1.25)
        self.question_edit.setFont(font)
        self.question_edit.returnPressed.connect(self.ask_current_question)

        self.answer_view = SafeTextView(self)
        self.answer_view.setObjectName("QuickAskAnswer")
        self._scroll = QScrollArea(self)
        self._scroll.setWidget(self.answer_view)
        self._scroll.setWidgetResizable(True)
        self._scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self._scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._scroll.viewport().setAutoFillBackground(False)
        self._scroll.setStyleSheet("QScrollArea { background: transparent; }")
        self._scroll.setFixedHeight(ANSWER_AREA_HEIGHT)
        self._scroll.hide()

        self.status_label = QLabel(self)
        self.status_label.setObjectName("QuickAskStatus")
        self.status_label.setWordWrap(True)
        # One click: the clipboard's text goes with the question as its context.
        self.clipboard_button = QPushButton("Use Clipboard", self)
        self.clipboard_button.setCheckable(True)
        self.clipboard_button.setToolTip("Ask about the text on the clipboard")
        self.clipboard_button.toggled.connect(self._on_clipboard_toggled)
        self._context = ""
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.clicked.connect(self.stop)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the answer (Markdown)")
        self.copy_button.clicked.connect(self.copy_answer)
        self.open_button = QPushButton("Open in Main Window", self)
        self.open_button.setToolTip("Continue this as a chat in the main window")
        self.open_button.clicked.connect(self.hand_over)

        for button in (self.clipboard_button, self.stop_button, self.copy_button, self.open_button):
            button.setObjectName("SecondaryButton")  # the app's flat buttons (app/theme.py)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.clipboard_button)
        buttons.addWidget(self.status_label, 1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.open_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 14, 16, 12)
        layout.setSpacing(10)
        layout.addWidget(self.question_edit)
        layout.addWidget(self._scroll)
        layout.addLayout(buttons)

        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self._render_answer)

        self._update_controls()

    # ------------------------------------------------------------------ state
    @property
    def question(self) -> str:
        """The question the shown answer belongs to (not what is being typed)."""
        return self._question

    @property
    def answer(self) -> str:
        """The answer so far, as the Markdown the model wrote."""
        return self._answer

    def is_answering(self) -> bool:
        return self._job is not None

    # ------------------------------------------------------------------ actions
    def ask_current_question(self) -> None:
        question = self.question_edit.text().strip()
        if question:
            self.ask(question)

    def ask(self, question: str) -> JobHandle:
        """Start answering ``question`` (stopping an answer still running); returns its job."""
        self.stop()
        self.question_edit.setText(question)
        self._question = question
        self._answer = ""
        self._finish_reason = None
        self._render_answer()
        if self._scroll.isHidden():
            self._scroll.show()  # its full height now, not bit by bit as the answer grows
            self.adjustSize()
        request = self._options_provider().request_for(question, self._context)
        job = self._worker.submit(chat_job(request), name="quick-ask")
        # A stopped question's job may still be winding down: only the current one speaks.
        job.started.connect(lambda: job is self._job and self._set_status("Reading\u2026"))
        job.event.connect(lambda event: job is self._job and self._on_job_event(event))
        job.failed.connect(lambda message: job is self._job and self._set_status(message, error=True))
        job.finished.connect(lambda: self._on_job_finished(job))
        self._job = job
        self._set_status("Waiting for the model\u2026")
        self._update_controls()
        return job

    @property
    def context(self) -> str:
        """The text sent with the question as its context ("" for none)."""
        return self._context

    def _on_clipboard_toggled(self, on: bool) -> None:
        self._context = QGuiApplication.clipboard().text() if on else ""
        if on and not self._context.strip():
            self.clipboard_button.setChecked(False)
            self._set_status("The clipboard holds no text")
            return
        self._set_status(f"With the clipboard ({len(self._context):,} characters)" if on else "")

    def stop(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def copy_answer(self) -> None:
        if self._answer:
            QGuiApplication.clipboard().setText(self._answer)
            self._set_status("Copied")

    def hand_over(self) -> None:
        """Give the exchange to the main window and get out of the way."""
        if not self._answer or self.is_answering():
            return
        outcome = "complete" if self._finish_reason in ("stop", "length") else "stopped"
        self.open_in_main_window.emit(self._question, self._answer, outcome)
        self.close()

    def popup_at(self, anchor: QRect) -> None:
        """Show under ``anchor`` (the menu-bar icon), kept on that icon's screen."""
        self.adjustSize()
        screen = QGuiApplication.screenAt(anchor.center()) if anchor.isValid() else None
        screen = screen or QGuiApplication.primaryScreen()
        area = screen.availableGeometry() if screen else QRect(0, 0, 1280, 800)
        if anchor.isValid():
            x = anchor.center().x() - self.width() // 2
            y = anchor.bottom() + 6
        else:  # no tray geometry (some Linux hosts): top centre, like a spotlight panel
            x = area.center().x() - self.width() // 2
            y = area.top() + area.height() // 6
        x = max(area.left() + 8, min(x, area.right() - self.width() - 8))
        y = max(area.top(), min(y, area.bottom() - self.height() - 8))
        self.move(QPoint(x, y))
        self.show()
        self.raise_()
        self.activateWindow()
        self.question_edit.setFocus(Qt.FocusReason.PopupFocusReason)
        self.question_edit.selectAll()

    # ------------------------------------------------------------------ worker events
    def _on_job_event(self, event: object) -> None:
        if isinstance(event, AnswerDelta):
            self._answer += event.text
            self._set_status("Answering\u2026")
            if not self._render_timer.isActive():
                self._render_timer.start()
        elif isinstance(event, ThinkingDelta):
            # The popup is for quick answers: thinking is shown as progress, not as text.
            self._set_status("Thinking\u2026")
        elif isinstance(event, PrefillProgress) and event.total and event.done < event.total:
            self._set_status(f"Reading\u2026 {100 * event.done // event.total}%")
        elif isinstance(event, Failed):
            self._set_status(event.message, error=True)
        elif isinstance(event, Finished):
            self._finish_reason = event.reason
            self._set_status(_finish_note(event))

    def _on_job_finished(self, job: JobHandle) -> None:
        if job is not self._job:
            return
        self._job = None
        self._render_timer.stop()
        self._render_answer()
        if not self._answer and not self._scroll.isHidden():
            self._scroll.hide()  # nothing came (no model, an error): just the status line
            self.adjustSize()
        self._update_controls()

    # ------------------------------------------------------------------ painting & keys
    def _render_answer(self) -> None:
        if self._answer == self._rendered_answer:
            return
        self._rendered_answer = self._answer
        self.answer_view.set_markdown(self._answer, RenderColors.from_palette(self.palette()))
        if self.is_answering():  # follow the text as it grows
            bar = self._scroll.verticalScrollBar()
            bar.setValue(bar.maximum())

    def _set_status(self, text: str, *, error: bool = False) -> None:
        self.status_label.setText(text)
        self.status_label.setProperty("error", error)
        role = QPalette.ColorRole.PlaceholderText
        color = QColor(215, 0, 21) if error else self.palette().color(role)
        self.status_label.setStyleSheet(f"color: {color.name()};")

    def _update_controls(self) -> None:
        answering = self.is_answering()
        self.stop_button.setVisible(answering)
        self.clipboard_button.setVisible(not answering)
        self.copy_button.setVisible(not answering)
        self.open_button.setVisible(not answering)
        self.copy_button.setEnabled(bool(self._answer))
        self.open_button.setEnabled(bool(self._answer))

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt API)
        if event.key() == Qt.Key.Key_Escape:
            self.close()
            return
        super().keyPressEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.stop()  # never leave an unseen answer holding the shared worker
        super().hideEvent(event)
        self.closed.emit()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt API)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._rendered_answer = None  # light/dark switch: code and link colours change
            self._render_answer()
        super().changeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        path = QPainterPath()
        path.addRoundedRect(rect, CORNER_RADIUS, CORNER_RADIUS)
        window = self.palette().color(QPalette.ColorRole.Window)
        dark = window.lightness() < 128
        painter.fillPath(path, window)
        painter.setPen(QPen(QColor(255, 255, 255, 40) if dark else QColor(0, 0, 0, 45), 1.0))
        painter.drawPath(path)


def _finish_note(event: Finished) -> str:
    stats = event.stats
    if event.reason == "cancelled":
        return "Stopped"
    if event.reason == "length":
        return f"Stopped at the {stats.generation_tokens}-token limit"
    if event.reason == "error":
        return "The answer broke off"
    return f"{stats.generation_tokens} tokens \u00b7 {stats.generation_tps:.0f} tok/s"
