"""Widgets of the document-summary flow: attachment chips, the plan panel, the progress panel.

They show state and emit the user's intent (start, cancel, remove); the document controller
does the work. Object names match the app's stylesheet (``PrefillBar``, ``MutedLabel``, ...).
"""

from __future__ import annotations

import html
import time
from typing import Callable, Iterable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.window.icons import file_icon_label
from mlx_backend.documents.reading import Document
from mlx_backend.documents.summary import SummaryPlan, SummaryTracker

_BAR_STEPS = 1000


def document_facts(document: Document) -> str:
    """"100 pages · 48,210 tokens" (whatever is known yet)."""
    facts = []
    if document.pages:
        facts.append(f"{document.pages:,} page{'s' if document.pages != 1 else ''}")
    if document.tokens is not None:
        facts.append(f"{document.tokens:,} tokens")
    else:
        facts.append(f"{document.characters:,} characters")
    return " · ".join(facts)


def duration_words(seconds: Optional[float]) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return "less than a second"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def details_html(description: str) -> str:
    """The plan's "Key: value" lines as a two-column table, keys in bold, for a rich-text label."""
    rows = []
    for line in description.splitlines():
        key, separator, value = line.partition(": ")
        if not separator:
            key, value = "", line
        rows.append(
            '<tr><td style="padding: 1px 12px 3px 0; font-weight: 600; white-space: nowrap;">'
            f"{html.escape(key)}</td><td style=\"padding: 1px 0 3px 0;\">{html.escape(value)}</td></tr>"
        )
    return f'<table cellspacing="0" cellpadding="0">{"".join(rows)}</table>'


class AttachmentChip(QFrame):
    """A document as a chip: file name, pages and tokens; an optional remove button."""

    removeRequested = Signal(str)  # the document's path

    def __init__(self, document: Document, *, removable: bool = False, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("AttachmentChip")
        self.document = document
        self.name_label = QLabel(document.name, self)
        self.facts_label = QLabel(self)
        self.facts_label.setObjectName("MutedLabel")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 1, 0 if removable else 2, 1)
        layout.setSpacing(6)
        layout.addWidget(file_icon_label(str(document.path), self))
        layout.addWidget(self.name_label)
        layout.addWidget(self.facts_label)
        self.remove_button: Optional[QToolButton] = None
        if removable:
            self.remove_button = QToolButton(self)
            self.remove_button.setText("\u00D7")
            self.remove_button.setAutoRaise(True)
            self.remove_button.setToolTip(f"Remove {document.name}")
            self.remove_button.clicked.connect(lambda: self.removeRequested.emit(str(document.path)))
            layout.addWidget(self.remove_button)
        self.set_document(document)

    def set_document(self, document: Document) -> None:
        """Refresh the facts, e.g. once the planner has counted the tokens."""
        self.document = document
        self.facts_label.setText(document_facts(document))
        self.setToolTip(str(document.path))

    @property
    def text(self) -> str:
        return f"{self.name_label.text()} {self.facts_label.text()}"


class PlanPanel(QFrame):
    """What will happen before it happens: the documents, the plan in words, Start and Cancel.

    States: reading (extracting and counting; Cancel only), ready (plan shown; Start),
    failed (a message; Cancel closes)."""

    startRequested = Signal()
    cancelRequested = Signal()
    removeRequested = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("DocumentPlanPanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel("Summarize documents", self)
        self.title.setObjectName("PanelTitle")
        self._chips_row = QWidget(self)
        self._chips = QHBoxLayout(self._chips_row)
        self._chips.setContentsMargins(0, 0, 0, 0)
        self._chips.setSpacing(6)
        self._chips.addStretch(1)
        self.status = QLabel(self)
        self.status.setObjectName("PlanHeadline")
        self.status.setWordWrap(True)
        self.plan_text = QLabel(self)
        self.plan_text.setObjectName("PlanDetails")
        self.plan_text.setTextFormat(Qt.TextFormat.RichText)
        self.plan_text.setWordWrap(True)
        self.plan_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problems = QLabel(self)
        self.problems.setObjectName("ErrorNote")
        self.problems.setWordWrap(True)
        self.busy = QProgressBar(self)
        self.busy.setObjectName("PrefillBar")
        self.busy.setTextVisible(False)
        self.busy.setRange(0, 0)  # indeterminate while reading
        self.start_button = QPushButton("Summarize", self)
        self.start_button.setObjectName("PrimaryButton")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("SecondaryButton")
        self.start_button.clicked.connect(self.startRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)
        # Summarize and Cancel live in a bar of their own, which the controller pins below the
        # scrolling panels: at small window sizes the plan scrolls and they stay in view.
        self.button_bar = QWidget()
        self.button_bar.setObjectName("PlanButtons")
        buttons = QHBoxLayout(self.button_bar)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.start_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 12, 16, 12)
        layout.setSpacing(8)
        layout.addWidget(self.title)
        layout.addWidget(self._chips_row)
        layout.addWidget(self.busy)
        layout.addWidget(self.status)
        layout.addWidget(self.plan_text)
        layout.addWidget(self.problems)
        self.plan: Optional[SummaryPlan] = None
        self._start_allowed = True
        self.show_reading([])

    # --- states ----------------------------------------------------------------------------

    def show_reading(self, names: Iterable[str]) -> None:
        names = list(names)
        self.plan = None
        self.busy.show()
        self.status.setText(f"Reading {', '.join(names)}\u2026" if names else "Reading\u2026")
        self.plan_text.clear()
        self.plan_text.hide()
        self.start_button.setEnabled(False)

    def show_planning(self, documents: Iterable[Document]) -> None:
        self.set_documents(documents)
        self.busy.show()
        self.status.setText("Counting tokens and planning\u2026")
        self.start_button.setEnabled(False)

    def show_plan(self, plan: SummaryPlan) -> None:
        self.plan = plan
        self.set_documents(plan.documents)
        self.busy.hide()
        self.status.setText(plan.headline)
        self.plan_text.setText(details_html(plan.description))
        self.plan_text.show()
        self._refresh_start()

    def show_error(self, message: str) -> None:
        """Nothing can be summarized (no readable document, no model): say why."""
        self.plan = None
        self.busy.hide()
        self.status.setText("")
        self.plan_text.setText(html.escape(message).replace("\n", "<br>"))
        self.plan_text.show()
        self.start_button.setEnabled(False)

    def set_problems(self, messages: Iterable[str]) -> None:
        """Files that were refused (the rest carries on)."""
        messages = list(messages)
        self.problems.setText("\n".join(messages))
        self.problems.setVisible(bool(messages))

    def set_documents(self, documents: Iterable[Document]) -> None:
        for chip in self.chips:
            self._chips.removeWidget(chip)
            chip.setParent(None)
            chip.deleteLater()
        for document in documents:
            chip = AttachmentChip(document, removable=True, parent=self._chips_row)
            chip.removeRequested.connect(self.removeRequested)
            self._chips.insertWidget(self._chips.count() - 1, chip)
            chip.show()  # at once, not on the next event-loop turn (the panel may be visible)

    def set_start_allowed(self, allowed: bool) -> None:
        """Start waits while another answer is streaming."""
        self._start_allowed = allowed
        self._refresh_start()

    def _refresh_start(self) -> None:
        self.start_button.setEnabled(self.plan is not None and self._start_allowed)

    @property
    def chips(self) -> list[AttachmentChip]:
        return [self._chips.itemAt(i).widget() for i in range(self._chips.count())
                if isinstance(self._chips.itemAt(i).widget(), AttachmentChip)]


class SummaryProgressPanel(QFrame):
    """Progress of a running summary: the step ("Summarizing part 3 of 12"), the whole run's
    bar with an ETA, the current prompt's reading (prefill) bar, and Cancel."""

    cancelRequested = Signal()
    # The whole run's fraction (0..1) each time it moves: handy for tests and the Dock badge.
    progressChanged = Signal(float)

    def __init__(self, parent: Optional[QWidget] = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(parent)
        self.setObjectName("DocumentProgressPanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._clock = clock
        self.tracker = SummaryTracker(clock)
        self.step_label = QLabel(self)
        self.step_label.setObjectName("PanelTitle")
        self.overall_bar = QProgressBar(self)
        self.overall_bar.setObjectName("SummaryBar")
        self.overall_bar.setRange(0, _BAR_STEPS)
        self.overall_bar.setTextVisible(False)
        self.eta_label = QLabel(self)
        self.eta_label.setObjectName("PrefillLabel")
        self.prefill_label = QLabel(self)
        self.prefill_label.setObjectName("PrefillLabel")
        self.prefill_bar = QProgressBar(self)
        self.prefill_bar.setObjectName("PrefillBar")
        self.prefill_bar.setRange(0, _BAR_STEPS)
        self.prefill_bar.setTextVisible(False)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("SecondaryButton")
        self.cancel_button.clicked.connect(self.cancelRequested)
        top = QHBoxLayout()
        top.setSpacing(10)
        top.addWidget(self.step_label, 1)
        top.addWidget(self.eta_label)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 10, 16, 12)
        layout.setSpacing(6)
        layout.addLayout(top)
        layout.addWidget(self.overall_bar)
        layout.addWidget(self.prefill_label)
        layout.addWidget(self.prefill_bar)
        self.start()

    def start(self) -> None:
        self.tracker = SummaryTracker(self._clock)
        self.cancel_button.setEnabled(True)
        self.cancel_button.setText("Cancel")
        self._render()

    def feed(self, event: object) -> None:
        if self.tracker.feed(event):
            self._render()

    def set_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling\u2026")

    def finish(self, message: str) -> None:
        """The run ended (done, cancelled or failed): show ``message`` and stop the bars."""
        self.step_label.setText(message)
        self.eta_label.clear()
        self.prefill_label.hide()
        self.prefill_bar.hide()
        self.cancel_button.setEnabled(False)

    @property
    def fraction(self) -> float:
        return self.overall_bar.value() / _BAR_STEPS

    def _render(self) -> None:
        tracker = self.tracker
        self.step_label.setText(tracker.label)
        value = int(round(tracker.fraction * _BAR_STEPS))
        moved = value != self.overall_bar.value()
        self.overall_bar.setValue(value)
        eta = tracker.eta_s
        self.eta_label.setText(f"about {duration_words(eta)} left" if eta else "")
        reading = tracker.stage is not None and not tracker.answering and not tracker.done
        self.prefill_label.setVisible(reading)
        self.prefill_bar.setVisible(reading)
        if reading:
            self.prefill_bar.setValue(int(round(tracker.prefill_fraction * _BAR_STEPS)))
            prefill_eta = tracker.prefill_eta_s
            self.prefill_label.setText(
                f"Reading the prompt: {tracker.prefill_fraction:.0%}"
                + (f", about {duration_words(prefill_eta)} left" if prefill_eta else ""))
        if moved:
            self.progressChanged.emit(self.fraction)
