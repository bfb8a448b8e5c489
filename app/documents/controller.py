"""Documents dropped on the main window, from drop to streamed summary to follow-up questions.

The flow, all driven from the GUI thread without blocking it:

1. A drop (transcript or composer) or ``open_files(paths)`` (Finder, Dock): the files are read
   on a background thread (``mlx_backend.documents.reading``); readable ones become chips in the
   composer, refused ones are listed with their reason.
2. A short worker job counts tokens and plans (``plan_for_engine``); the plan panel shows the
   plan in words with Start and Cancel. Nothing heavy has run yet.
3. Start sends the composer's message (typed text = what to focus on) with the chips. The chat
   controller asks our job builder for the turn's job, which re-plans with those instructions
   (cheap: tokens are already counted) and runs ``run_summary`` on the worker. The builder's
   ``TurnJob`` asks for the job's handle: from then on this controller follows its own job (the
   progress panel: parts, prefill, ETA, Cancel) while the answer streams into the chat as an
   ordinary assistant message.
4. Later turns in that conversation send the document prompt again in place of the short user
   message, with the same YaRN/KV settings, so the engine's prompt cache answers them without
   reading the document again. After a restart the files are re-read on the worker instead.

Jobs themselves are Qt-free (``mlx_backend/documents/jobs.py``); this module is the Qt side.
Everything it uses comes through its constructor: the chat controller (``set_job_builder``,
``generatingChanged``, ``generating``, ``stop``), the composer, the worker client, the widgets
that accept drops and where to put the panels.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from app.chat.composer import Composer
from app.chat.controller import ChatController
from app.chat.turns import TurnContext, TurnJob
from app.chat.history import history_messages
from app.chat.store import Attachment, StoredMessage
from app.documents.drop import DocumentDropFilter
from app.documents.panel_scroll import PinnedPanels
from app.documents.widgets import PlanPanel, SummaryProgressPanel
from app.worker.handle import JobHandle
from app.worker.worker import WorkerClient, chat_job
from mlx_backend.documents.jobs import (
    DocumentContext,
    PlanReady,
    RestoredContext,
    plan_job,
    restored_follow_up_job,
    summary_job,
)
from mlx_backend.documents.reading import Document, DocumentBatch, DocumentFailure, read_documents
from mlx_backend.documents.summary import SummaryOptions, SummaryPlan, SummaryRequestStarted
from mlx_backend.events import ChatMessage, Failed, Finished

log = logging.getLogger(__name__)

DOCUMENT_KIND = "document"
# How long the progress panel keeps saying "Summary ready" / "Cancelled" before it goes.
FINISHED_PANEL_MS = 4000


def _attachment_for(document: Document) -> Attachment:
    details: dict[str, Any] = {"kind": document.kind, "characters": document.characters}
    if document.pages:
        details["pages"] = document.pages
    if document.tokens is not None:
        details["tokens"] = document.tokens
    return Attachment(name=document.name, path=str(document.path), kind=DOCUMENT_KIND, details=details)


def _document_paths(message: StoredMessage) -> list[str]:
    return [a.path for a in message.attachments if a.kind == DOCUMENT_KIND and a.path]


def _messages_with(turn: TurnContext, document_message_id: int) -> Callable[[str], tuple[ChatMessage, ...]]:
    """The turn's messages with the document turn's real prompt put back in its place."""
    return lambda content: history_messages(turn.system_prompt, turn.history,
                                            replaced={document_message_id: content}, tool_calls=turn.tool_calls)


class _ExtractionSignals(QObject):
    # (drop generation, DocumentBatch): emitted from the reading thread, delivered on the GUI's.
    extracted = Signal(int, object)


class _PanelHolder(QWidget):
    """The panels' strip: shown while one of them is, so it leaves no margin behind."""

    def __init__(self, panels: tuple[QWidget, ...]) -> None:
        super().__init__()
        self.setObjectName("DocumentPanels")
        self._panels = panels
        for panel in panels:
            panel.installEventFilter(self)
        self.hide()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() in (QEvent.Type.ShowToParent, QEvent.Type.HideToParent):
            self.setVisible(any(not panel.isHidden() for panel in self._panels))
        return False


class DocumentController(QObject):
    """Installs document drops on the main window and drives plan -> summary -> follow-ups."""

    summaryFinished = Signal(str, str)  # job id, "complete" | "cancelled" | "error"

    def __init__(self, chat: ChatController, composer: Composer, worker: WorkerClient, *,
                 drop_targets: Iterable[QWidget], place_panel: Callable[[QWidget], None],
                 system_prompt: Callable[[], str], options: Optional[SummaryOptions] = None,
                 clock: Callable[[], float] = time.monotonic, parent: Optional[QObject] = None) -> None:
        super().__init__(parent if parent is not None else chat)
        self._worker = worker
        self._chat = chat
        self._composer = composer
        self._system_prompt = system_prompt
        self._options = options or SummaryOptions()
        self._generation = 0
        self._extract_cancel: Optional[threading.Event] = None
        self._documents: dict[str, Document] = {}  # by path: read (and counted) this session
        self._our_paths: set[str] = set()  # composer chips this controller added
        self._problems: list[str] = []
        self._plan_job: Optional[JobHandle] = None
        self._waiting_for_model = False
        self._summary_job: Optional[JobHandle] = None
        self._summary_outcome = "complete"
        self._contexts: dict[int, DocumentContext] = {}  # by the document turn's user message id
        self._signals = _ExtractionSignals(self)
        self._signals.extracted.connect(self._on_extracted)

        self.plan_panel = PlanPanel()
        self.progress_panel = SummaryProgressPanel(clock=clock)  # the clock times the ETA
        # Scrolls when the window is small, the plan's buttons pinned below it.
        place_panel(PinnedPanels(self._panel_holder(), self._plan_buttons_row(), self.plan_panel))
        self.plan_panel.hide()
        self.progress_panel.hide()
        self.plan_panel.startRequested.connect(self.start)
        self.plan_panel.cancelRequested.connect(self.dismiss)
        self.plan_panel.removeRequested.connect(self._remove_path)
        self.progress_panel.cancelRequested.connect(self.cancel_summary)
        self._hide_progress_timer = QTimer(self)
        self._hide_progress_timer.setSingleShot(True)
        self._hide_progress_timer.timeout.connect(self.progress_panel.hide)
        self._replan_timer = QTimer(self)
        self._replan_timer.setSingleShot(True)
        self._replan_timer.setInterval(0)  # one re-plan per burst of chip changes
        self._replan_timer.timeout.connect(self._request_plan)

        self.drop_filter = DocumentDropFilter(self)
        for widget in (*drop_targets, composer, composer.edit, self.plan_panel):
            self.drop_filter.install(widget)
        self.drop_filter.filesDropped.connect(self.open_files)

        self._chat.set_job_builder(self._build_job)
        self._chat.generatingChanged.connect(lambda generating: self.plan_panel.set_start_allowed(not generating))
        self._composer.attachmentsChanged.connect(self._on_attachments_changed)
        worker.modelLoaded.connect(self._on_model_loaded)

    # ------------------------------------------------------------------ layout
    def _panel_holder(self) -> QWidget:
        """The panels' strip, to sit between the transcript and the composer, as wide as it."""
        holder = _PanelHolder((self.plan_panel, self.progress_panel))
        row = QHBoxLayout(holder)
        row.setContentsMargins(24, 0, 24, 8)
        column = QVBoxLayout()
        column.setSpacing(6)
        column.addWidget(self.plan_panel)
        column.addWidget(self.progress_panel)
        for panel in (self.plan_panel, self.progress_panel):
            panel.setMaximumWidth(self._composer.maximumWidth())
        row.addStretch(1)
        row.addLayout(column, 100)
        row.addStretch(1)
        self.panel_holder = holder
        return holder

    def _plan_buttons_row(self) -> QWidget:
        """The plan's Summarize and Cancel, in the same column as the plan above them."""
        row_widget = QWidget()
        row_widget.setObjectName("PlanButtonsRow")
        row = QHBoxLayout(row_widget)
        row.setContentsMargins(24, 0, 24, 8)
        bar = self.plan_panel.button_bar
        bar.setMaximumWidth(self._composer.maximumWidth())
        row.addStretch(1)
        row.addWidget(bar, 100)
        row.addStretch(1)
        return row_widget

    # ------------------------------------------------------------------ drops
    def open_files(self, paths: list) -> None:
        """Read ``paths`` off the GUI thread, then plan. Also the slot for Finder's file opens."""
        paths = [str(p) for p in paths if str(p)]
        if not paths:
            return
        if self._extract_cancel is not None:
            self._extract_cancel.set()  # a newer drop supersedes a read still running
        self._generation += 1
        cancel = threading.Event()
        self._extract_cancel = cancel
        self._problems = []
        self.plan_panel.set_problems([])
        self.plan_panel.show_reading(Path(p).name for p in paths)
        self.plan_panel.show()
        thread = threading.Thread(target=self._extract, args=(self._generation, paths, cancel),
                                  name="document-reader", daemon=True)
        thread.start()

    def _extract(self, generation: int, paths: list[str], cancel: threading.Event) -> None:
        """Background thread: no Qt objects touched here, only the signal emitted. A dropped
        folder is read as the documents inside it (``read_documents``)."""
        try:
            batch = read_documents(paths, cancel=cancel.is_set)
        except Exception as error:  # noqa: BLE001 - one odd file must not take the app down
            log.exception("reading %s failed", paths)
            batch = DocumentBatch((), tuple(DocumentFailure(Path(path), f"{Path(path).name} couldn't be read ({error}).")
                                            for path in paths))
        if not cancel.is_set():
            self._signals.extracted.emit(generation, batch)

    def _on_extracted(self, generation: int, batch: DocumentBatch) -> None:
        if generation != self._generation:
            return  # superseded or cancelled
        self._extract_cancel = None
        self._problems = batch.messages
        self.plan_panel.set_problems(self._problems)
        if not batch.documents and not self.current_documents():
            self.plan_panel.show_error("None of the files can be summarized.")
            return
        attached = {a.path for a in self._composer.attachments}
        for document in batch.documents:
            path = str(document.path)
            self._documents[path] = document
            if path not in attached:
                self._our_paths.add(path)
                self._composer.add_attachment(_attachment_for(document))
        self._replan_timer.start()

    # ------------------------------------------------------------------ planning
    def current_documents(self) -> tuple[Document, ...]:
        """The read documents whose chips are in the composer now, in chip order."""
        return tuple(self._documents[a.path] for a in self._composer.attachments
                     if a.kind == DOCUMENT_KIND and a.path in self._documents)

    def _summary_options(self, instructions: Optional[str] = None) -> SummaryOptions:
        system = self._system_prompt().strip() or None
        return replace(self._options, instructions=instructions or self._options.instructions, system_prompt=system)

    def _request_plan(self) -> None:
        if self._extract_cancel is not None:
            return  # files are still being read; their arrival plans again
        documents = self.current_documents()
        if self._plan_job is not None:
            self._plan_job.cancel()
            self._plan_job = None
        if not documents:
            self.plan_panel.hide()
            return
        self.plan_panel.show_planning(documents)
        self.plan_panel.show()
        if self._worker.model_info is None and not self._worker.loading:
            self._waiting_for_model = True
            self.plan_panel.show_error("Load a model (Model \u203a Manage Models\u2026) to plan the summary.")
            self.plan_panel.set_documents(documents)
            return
        self._waiting_for_model = False
        job = self._worker.submit(plan_job(documents, self._summary_options()), name="docplan")
        self._plan_job = job
        job.event.connect(lambda event: job is self._plan_job and isinstance(event, PlanReady)
                          and self._on_plan(event.plan))
        job.failed.connect(lambda message: job is self._plan_job and self.plan_panel.show_error(message))
        job.finished.connect(lambda: self._plan_job is job and self._forget_plan_job())

    def _on_model_loaded(self, _info: object) -> None:
        if self._waiting_for_model and self.plan_panel.isVisible():
            self._replan_timer.start()

    def _on_attachments_changed(self, attachments: list) -> None:
        paths = {a.path for a in attachments if a.kind == DOCUMENT_KIND}
        self._our_paths &= paths
        if not self.plan_panel.isVisible():
            return
        if not any(path in self._documents for path in paths):
            self._replan_timer.stop()
            self._cancel_planning()
            self.plan_panel.hide()  # sent (the chips went with the message) or all removed
            return
        self._replan_timer.start()

    def _remove_path(self, path: str) -> None:
        for attachment in self._composer.attachments:
            if attachment.path == path:
                self._composer.remove_attachment(attachment)

    def _cancel_planning(self) -> None:
        if self._extract_cancel is not None:
            self._extract_cancel.set()
            self._extract_cancel = None
            self._generation += 1
        if self._plan_job is not None:
            self._plan_job.cancel()
            self._plan_job = None

    def _forget_plan_job(self) -> None:
        self._plan_job = None

    def dismiss(self) -> None:
        """The plan panel's Cancel: stop reading/planning and take back the chips we added."""
        self._cancel_planning()
        self.plan_panel.hide()
        for attachment in self._composer.attachments:
            if attachment.path in self._our_paths:
                self._composer.remove_attachment(attachment)
        self._our_paths.clear()

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start: send the composer's text (the focus, if any) with the document chips."""
        if self._chat.generating or self.plan_panel.plan is None:
            return
        self._composer.submit()

    def cancel_summary(self) -> None:
        if self._summary_job is not None:
            self.progress_panel.set_cancelling()
            self._chat.stop()  # our job is the chat's turn: the chat records it as interrupted

    def _build_job(self, turn: TurnContext) -> Optional[TurnJob]:
        """ChatController's job builder: summary turns and document follow-ups; else None."""
        last = turn.history[-1]
        paths = _document_paths(last)
        if paths:
            options = self._summary_options(last.content.strip() or None)
            job = summary_job(paths, dict(self._documents), options, turn.conversation_id)
            return TurnJob(job, on_submitted=lambda handle: self._follow_summary(handle, last.id),
                           progress_label="Summarizing\u2026")  # the panel below has the numbers
        document_message = next((m for m in reversed(turn.history[:-1])
                                 if m.role == "user" and _document_paths(m)), None)
        if document_message is None:
            return None
        messages_with = _messages_with(turn, document_message.id)
        context = self._contexts.get(document_message.id)
        if context is None:
            options = self._summary_options(document_message.content.strip() or None)
            job = restored_follow_up_job(turn.request, document_message.id, _document_paths(document_message),
                                         options, messages_with)
            return TurnJob(job, on_submitted=self._follow_restored)
        request = replace(turn.request, messages=messages_with(context.user_content),
                          yarn_factor=context.yarn_factor, kv_bits=context.kv_bits)
        return TurnJob(chat_job(request))

    def _follow_restored(self, handle: JobHandle) -> None:
        def on_event(event: object) -> None:
            if isinstance(event, RestoredContext):
                self._contexts[event.context.user_message_id] = event.context

        handle.event.connect(on_event)

    def _follow_summary(self, handle: JobHandle, user_message_id: int) -> None:
        """From here on the summary is ours: its progress, outcome and document context."""
        self._summary_job = handle
        self._summary_outcome = "complete"
        self._hide_progress_timer.stop()
        self.progress_panel.start()
        self.progress_panel.show()
        handle.event.connect(lambda event: self._on_summary_event(event, user_message_id))
        handle.failed.connect(lambda _message: self._set_outcome("error"))  # the chat shows the message
        handle.finished.connect(lambda: self._on_summary_finished(handle))

    def _set_outcome(self, outcome: str) -> None:
        self._summary_outcome = outcome

    def _on_summary_event(self, event: object, user_message_id: int) -> None:
        self.progress_panel.feed(event)
        if isinstance(event, PlanReady):
            self._remember_counts(event.plan)
        elif isinstance(event, SummaryRequestStarted):
            request = event.request
            self._contexts[user_message_id] = DocumentContext(
                user_message_id, request.messages[-1].content, request.yarn_factor, request.kv_bits)
        elif isinstance(event, Failed):
            self._summary_outcome = "error"
        elif isinstance(event, Finished) and event.reason in ("cancelled", "error"):
            self._summary_outcome = "cancelled" if event.reason == "cancelled" else "error"

    def _on_summary_finished(self, handle: JobHandle) -> None:
        outcome = self._summary_outcome
        words = {"complete": "Summary ready", "cancelled": "Cancelled", "error": "The summary failed"}
        self.progress_panel.finish(words[outcome])
        self._summary_job = None
        self._hide_progress_timer.start(FINISHED_PANEL_MS)
        self.summaryFinished.emit(handle.job_id, outcome)

    def _remember_counts(self, plan: SummaryPlan) -> None:
        for document in plan.documents:
            if str(document.path) in self._documents:
                self._documents[str(document.path)] = document

    def _on_plan(self, plan: SummaryPlan) -> None:
        self._remember_counts(plan)
        self.plan_panel.show_plan(plan)
        self.plan_panel.set_start_allowed(not self._chat.generating)

