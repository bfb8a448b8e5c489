"""Documents dropped on the main window, from drop to streamed summary to follow-up questions.

The flow, all driven from the GUI thread without blocking it:

1. A drop (transcript or composer) or ``open_files(paths)`` (Finder, Dock): the files are read
   on a background thread (``mlx_backend.documents.reading``); readable ones become chips in the
   composer, refused ones are listed with their reason.
2. A short worker job counts tokens and plans (``plan_for_engine``); the plan panel shows the
   plan in words with Start and Cancel. Nothing heavy has run yet.
3. Start sends the composer's message (typed text = what to focus on) with the chips. The chat
   controller asks our job builder for the turn's job, which re-plans with those instructions
   (cheap: tokens are already counted) and runs ``run_summary`` on the worker. The answer
   streams into the chat as an ordinary assistant message; the progress panel follows the
   parts and the prefill, with an ETA and Cancel.
4. Later turns in that conversation send the document prompt again in place of the short user
   message, with the same YaRN/KV settings, so the engine's prompt cache answers them without
   reading the document again. After a restart the files are re-read on the worker instead.

Hooks used on the main window (all public attributes of ``app.window.main_window.MainWindow``):
``add_bottom_panel`` (where the panels go), ``transcript`` (a scroll area), ``composer`` (``edit``, ``attachments``, ``add_attachment``,
``remove_attachment``, ``attachmentsChanged``, ``submit``) and ``chat`` (``set_job_builder``,
``generatingChanged``, ``current_job_id``, ``generating``, ``stop``, ``build_request``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from PySide6.QtCore import QEvent, QObject, QTimer, Signal
from PySide6.QtWidgets import QHBoxLayout, QVBoxLayout, QWidget

from app.documents.drop import DocumentDropFilter
from app.documents.widgets import PlanPanel, SummaryProgressPanel
from app.chat.store import Attachment, StoredMessage
from app.worker.worker import chat_job
from mlx_backend.documents.reading import Document, DocumentBatch, DocumentFailure, read_document
from mlx_backend.errors import DocumentError, QwenDeskError
from mlx_backend.events import ChatMessage, ChatRequest, Failed, Finished
from mlx_backend.documents.summary import (
    SummaryOptions,
    SummaryPlan,
    SummaryRequestStarted,
    plan_for_engine,
    run_summary,
)

if TYPE_CHECKING:
    from app.chat.controller import TurnContext

log = logging.getLogger(__name__)

DOCUMENT_KIND = "document"
# How long the progress panel keeps saying "Summary ready" / "Cancelled" before it goes.
FINISHED_PANEL_MS = 4000


@dataclass(frozen=True)
class PlanReady:
    """A worker job's plan, for the plan panel (also the first event of a summary job)."""

    plan: SummaryPlan


@dataclass(frozen=True)
class DocumentContext:
    """What a conversation's document turn really sent, so follow-ups can send it again."""

    user_message_id: int
    user_content: str  # the document prompt that stands in for the short stored message
    yarn_factor: Optional[float]
    kv_bits: Optional[int]


@dataclass(frozen=True)
class _RestoredContext:
    """A follow-up job rebuilt the document prompt from the files (after a restart)."""

    context: DocumentContext


def _attachment_for(document: Document) -> Attachment:
    details: dict[str, Any] = {"kind": document.kind, "characters": document.characters}
    if document.pages:
        details["pages"] = document.pages
    if document.tokens is not None:
        details["tokens"] = document.tokens
    return Attachment(name=document.name, path=str(document.path), kind=DOCUMENT_KIND, details=details)


def _document_paths(message: StoredMessage) -> list[str]:
    return [a.path for a in message.attachments if a.kind == DOCUMENT_KIND and a.path]


def plan_job(documents: tuple[Document, ...], options: SummaryOptions):
    """Worker job: count tokens and plan; yields one ``PlanReady``."""

    def job(engine: Any, cancel: threading.Event) -> Iterator[object]:
        yield PlanReady(plan_for_engine(engine, documents, options, cancel))

    return job


def _read_all(paths: Iterable[str], known: dict[str, Document]) -> tuple[Document, ...]:
    """The documents for ``paths``: already read ones from memory, the others from disk now."""
    return tuple(known.get(path) or read_document(path) for path in paths)


def summary_job(paths: list[str], known: dict[str, Document], options: SummaryOptions, conversation_id: str):
    """Worker job for a summary turn: (re-)plan with the turn's instructions, then run it."""

    def job(engine: Any, cancel: threading.Event) -> Iterator[object]:
        documents = _read_all(paths, known)
        plan = plan_for_engine(engine, documents, options, cancel)
        yield PlanReady(plan)
        yield from run_summary(engine, plan, cancel, conversation_id=conversation_id)

    return job


def _rebuilt_messages(context: "TurnContext", document_message_id: int, content: str) -> tuple[ChatMessage, ...]:
    """The chat's messages for this turn with the document turn's real prompt put back."""
    system = tuple(m for m in context.request.messages if m.role == "system")
    messages: list[ChatMessage] = []
    for message in context.history:
        # The same filter as ChatController.build_request: failed or empty answers are not history.
        if message.role == "assistant" and (message.status == "error" or not message.content.strip()):
            continue
        if message.role not in ("user", "assistant"):
            continue
        text = content if message.id == document_message_id else message.content
        messages.append(ChatMessage(message.role, text))
    return system + tuple(messages)


def restored_follow_up_job(turn: "TurnContext", document_message: StoredMessage, options: SummaryOptions):
    """A follow-up whose document prompt is no longer in memory: re-read the files on the worker
    and, if the whole document fits one pass, send it again; otherwise answer from the chat
    history (the summary itself) alone."""
    paths = _document_paths(document_message)

    def job(engine: Any, cancel: threading.Event) -> Iterator[object]:
        request = turn.request
        try:
            plan = plan_for_engine(engine, _read_all(paths, {}), options, cancel)
        except QwenDeskError as error:  # files gone or changed, too big now: answer from history
            log.info("follow-up without its documents: %s", error)
            plan = None
        if plan is not None and plan.strategy == "single_pass":
            content = plan.single_pass_request().messages[-1].content
            context = DocumentContext(document_message.id, content, plan.yarn_factor, plan.kv_bits)
            yield _RestoredContext(context)
            request = replace(request, messages=_rebuilt_messages(turn, document_message.id, content),
                              yarn_factor=plan.yarn_factor, kv_bits=plan.kv_bits)
        yield from engine.stream(request, cancel)

    return job


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

    planReady = Signal(object)  # SummaryPlan
    summaryStarted = Signal(str)  # worker job id
    summaryFinished = Signal(str, str)  # job id, "complete" | "cancelled" | "error"

    def __init__(self, window: Any, worker: Any, *, options: Optional[SummaryOptions] = None,
                 clock: Callable[[], float] = time.monotonic, parent: Optional[QObject] = None) -> None:
        super().__init__(parent if parent is not None else window)
        self._window = window
        self._worker = worker
        self._chat = window.chat
        self._composer = window.composer
        self._options = options or SummaryOptions()
        self._ids = itertools.count(1)
        self._generation = 0
        self._extract_cancel: Optional[threading.Event] = None
        self._documents: dict[str, Document] = {}  # by path: read (and counted) this session
        self._our_paths: set[str] = set()  # composer chips this controller added
        self._problems: list[str] = []
        self._plan_job_id: Optional[str] = None
        self._waiting_for_model = False
        self._summary_job_id: Optional[str] = None
        self._summary_message_id: Optional[int] = None
        self._pending_summary_message: Optional[int] = None
        self._summary_outcome = "complete"
        self._contexts: dict[int, DocumentContext] = {}  # by the document turn's user message id
        self._signals = _ExtractionSignals(self)
        self._signals.extracted.connect(self._on_extracted)

        self.plan_panel = PlanPanel()
        self.progress_panel = SummaryProgressPanel(clock=clock)  # the clock times the ETA
        self._place_panels()
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
        for widget in (window.transcript, self._composer, self._composer.edit, self.plan_panel):
            self.drop_filter.install(widget)
        self.drop_filter.filesDropped.connect(self.open_files)

        self._chat.set_job_builder(self._build_job)
        self._chat.generatingChanged.connect(self._on_generating)
        self._composer.attachmentsChanged.connect(self._on_attachments_changed)
        worker.jobEvent.connect(self._on_job_event)
        worker.jobFailed.connect(self._on_job_failed)
        worker.jobFinished.connect(self._on_job_finished)
        worker.modelLoaded.connect(self._on_model_loaded)

    # ------------------------------------------------------------------ layout
    def _place_panels(self) -> None:
        """Between the transcript and the composer, as wide as the composer."""
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
        self._window.add_bottom_panel(holder)

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
        """Background thread: no Qt objects touched here, only the signal emitted."""
        documents: list[Document] = []
        failures: list[DocumentFailure] = []
        for path in paths:
            if cancel.is_set():
                return
            try:
                documents.append(read_document(path))
            except DocumentError as error:
                failures.append(DocumentFailure(Path(path), str(error)))
            except Exception as error:  # noqa: BLE001 - one odd file must not take the app down
                log.exception("reading %s failed", path)
                failures.append(DocumentFailure(Path(path), f"{Path(path).name} couldn't be read ({error})."))
        if not cancel.is_set():
            self._signals.extracted.emit(generation, DocumentBatch(tuple(documents), tuple(failures)))

    def _on_extracted(self, generation: int, batch: DocumentBatch) -> None:
        if generation != self._generation:
            return  # superseded or cancelled
        self._extract_cancel = None
        self._problems = [failure.message for failure in batch.failures]
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

    def _summary_options(self, instructions: Optional[str] = None, request: Optional[ChatRequest] = None) -> SummaryOptions:
        request = request or self._chat.build_request([])
        system = next((m.content for m in request.messages if m.role == "system"), None)
        return replace(self._options, instructions=instructions or self._options.instructions, system_prompt=system)

    def _request_plan(self) -> None:
        if self._extract_cancel is not None:
            return  # files are still being read; their arrival plans again
        documents = self.current_documents()
        if self._plan_job_id is not None:
            self._worker.cancel(self._plan_job_id)
            self._plan_job_id = None
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
        job_id = f"docplan-{next(self._ids)}"
        self._plan_job_id = job_id
        self._worker.submit(job_id, plan_job(documents, self._summary_options()))

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
        if self._plan_job_id is not None:
            self._worker.cancel(self._plan_job_id)
            self._plan_job_id = None

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
        if self._summary_job_id is not None and self._chat.current_job_id == self._summary_job_id:
            self.progress_panel.set_cancelling()
            self._chat.stop()

    def _build_job(self, turn: Any) -> Optional[Any]:
        """ChatController's job builder: summary turns and document follow-ups; else None."""
        last = turn.history[-1]
        paths = _document_paths(last)
        if paths:
            self._pending_summary_message = last.id
            options = self._summary_options(last.content.strip() or None, turn.request)
            return summary_job(paths, dict(self._documents), options, turn.conversation_id)
        document_message = next((m for m in reversed(turn.history[:-1])
                                 if m.role == "user" and _document_paths(m)), None)
        if document_message is None:
            return None
        context = self._contexts.get(document_message.id)
        if context is None:
            options = self._summary_options(document_message.content.strip() or None, turn.request)
            return restored_follow_up_job(turn, document_message, options)
        request = replace(turn.request, messages=_rebuilt_messages(turn, document_message.id, context.user_content),
                          yarn_factor=context.yarn_factor, kv_bits=context.kv_bits)
        return chat_job(request)

    def _on_generating(self, generating: bool) -> None:
        self.plan_panel.set_start_allowed(not generating)
        if generating and self._pending_summary_message is not None:
            self._summary_job_id = self._chat.current_job_id
            self._summary_message_id = self._pending_summary_message
            self._pending_summary_message = None
            self._summary_outcome = "complete"
            view = self._chat.streaming_view
            if view is not None:
                view.set_progress_shown_elsewhere("Summarizing\u2026")  # the panel below has the numbers
            self._hide_progress_timer.stop()
            self.progress_panel.start()
            self.progress_panel.show()
            self.summaryStarted.emit(self._summary_job_id or "")

    def _on_job_event(self, job_id: str, event: object) -> None:
        if job_id == self._plan_job_id and isinstance(event, PlanReady):
            self._on_plan(event.plan)
        elif job_id == self._summary_job_id:
            self.progress_panel.feed(event)
            if isinstance(event, PlanReady):
                self._remember_counts(event.plan)
            elif isinstance(event, SummaryRequestStarted) and self._summary_message_id is not None:
                request = event.request
                self._contexts[self._summary_message_id] = DocumentContext(
                    self._summary_message_id, request.messages[-1].content, request.yarn_factor, request.kv_bits)
            elif isinstance(event, Failed):
                self._summary_outcome = "error"
            elif isinstance(event, Finished) and event.reason in ("cancelled", "error"):
                self._summary_outcome = "cancelled" if event.reason == "cancelled" else "error"
        elif isinstance(event, _RestoredContext):
            self._contexts[event.context.user_message_id] = event.context

    def _remember_counts(self, plan: SummaryPlan) -> None:
        for document in plan.documents:
            if str(document.path) in self._documents:
                self._documents[str(document.path)] = document

    def _on_plan(self, plan: SummaryPlan) -> None:
        self._remember_counts(plan)
        self.plan_panel.show_plan(plan)
        self.plan_panel.set_start_allowed(not self._chat.generating)
        self.planReady.emit(plan)

    def _on_job_failed(self, job_id: str, message: str) -> None:
        if job_id == self._plan_job_id:
            self.plan_panel.show_error(message)
        elif job_id == self._summary_job_id:
            self._summary_outcome = "error"  # the chat shows the message in the answer's bubble

    def _on_job_finished(self, job_id: str) -> None:
        if job_id == self._plan_job_id:
            self._plan_job_id = None
            return
        if job_id != self._summary_job_id:
            return
        outcome = self._summary_outcome
        words = {"complete": "Summary ready", "cancelled": "Cancelled", "error": "The summary failed"}
        self.progress_panel.finish(words[outcome])
        self._summary_job_id = None
        self._summary_message_id = None
        self._hide_progress_timer.start(FINISHED_PANEL_MS)
        self.summaryFinished.emit(job_id, outcome)

    # ------------------------------------------------------------------ state for tests/UI
    @property
    def summary_job_id(self) -> Optional[str]:
        return self._summary_job_id

    def context_for(self, user_message_id: int) -> Optional[DocumentContext]:
        return self._contexts.get(user_message_id)

