"""Worker jobs for documents: plain functions ``job(engine, cancel) -> Iterator[events]``.

No Qt here: the app's worker thread runs these, but so could a CLI or a test. Each job yields
the engine's events plus its own (``PlanReady``, ``RestoredContext``), in order.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Optional, Protocol

from mlx_backend.documents.reading import Document, read_document
from mlx_backend.documents.summary import SummaryOptions, SummaryPlan, plan_for_engine, run_summary
from mlx_backend.errors import QwenDeskError
from mlx_backend.events import ChatMessage, ChatRequest

log = logging.getLogger(__name__)


class StreamingEngine(Protocol):
    """What document jobs use of an engine directly (the planner and summary take it as is)."""

    def stream(self, request: ChatRequest, cancel: threading.Event) -> Iterator[object]: ...


DocumentJob = Callable[[StreamingEngine, threading.Event], Iterator[object]]


@dataclass(frozen=True)
class PlanReady:
    """A job's plan (the only event of a plan job, the first of a summary job)."""

    plan: SummaryPlan


@dataclass(frozen=True)
class DocumentContext:
    """What a conversation's document turn really sent, so follow-ups can send it again."""

    user_message_id: int
    user_content: str  # the document prompt that stands in for the short stored message
    yarn_factor: Optional[float]
    kv_bits: Optional[int]


@dataclass(frozen=True)
class RestoredContext:
    """A follow-up job rebuilt the document prompt from the files (after a restart)."""

    context: DocumentContext


def read_all(paths: Iterable[str], known: dict[str, Document]) -> tuple[Document, ...]:
    """The documents for ``paths``: already read ones from memory, the others from disk now."""
    return tuple(known.get(path) or read_document(path) for path in paths)


def plan_job(documents: tuple[Document, ...], options: SummaryOptions) -> DocumentJob:
    """Count tokens and plan; yields one ``PlanReady``."""

    def job(engine: StreamingEngine, cancel: threading.Event) -> Iterator[object]:
        yield PlanReady(plan_for_engine(engine, documents, options, cancel))

    return job


def summary_job(paths: list[str], known: dict[str, Document], options: SummaryOptions,
                conversation_id: str) -> DocumentJob:
    """A summary turn: (re-)plan with the turn's instructions, then run it."""

    def job(engine: StreamingEngine, cancel: threading.Event) -> Iterator[object]:
        plan = plan_for_engine(engine, read_all(paths, known), options, cancel)
        yield PlanReady(plan)
        yield from run_summary(engine, plan, cancel, conversation_id=conversation_id)

    return job


# Builds the turn's messages with the document message's text replaced by the given prompt.
MessagesWithDocument = Callable[[str], tuple[ChatMessage, ...]]


def restored_follow_up_job(request: ChatRequest, document_message_id: int, paths: list[str],
                           options: SummaryOptions, messages_with: MessagesWithDocument) -> DocumentJob:
    """A follow-up whose document prompt is no longer in memory: re-read the files and, if the
    whole document fits one pass, send it again; otherwise answer from the chat history (the
    summary itself) alone."""

    def job(engine: StreamingEngine, cancel: threading.Event) -> Iterator[object]:
        turn_request = request
        try:
            plan: Optional[SummaryPlan] = plan_for_engine(engine, read_all(paths, {}), options, cancel)
        except QwenDeskError as error:  # files gone or changed, too big now: answer from history
            log.info("follow-up without its documents: %s", error)
            plan = None
        if plan is not None and plan.strategy == "single_pass":
            content = plan.single_pass_request().messages[-1].content
            yield RestoredContext(DocumentContext(document_message_id, content, plan.yarn_factor, plan.kv_bits))
            turn_request = replace(request, messages=messages_with(content),
                                   yarn_factor=plan.yarn_factor, kv_bits=plan.kv_bits)
        yield from engine.stream(turn_request, cancel)

    return job
