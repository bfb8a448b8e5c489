"""What a chat turn is made of: the builder's view of it, its job, and the answer as it streams."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

from app.chat.store import DEFAULT_TITLE, StoredMessage
from app.worker.handle import JobHandle
from app.worker.protocols import InferenceEngine, Job
from mlx_backend.events import ChatRequest

TITLE_MAX_CHARS = 48


@dataclass(frozen=True)
class TurnContext:
    """What a job builder gets: the conversation so far and the plain chat request for it."""

    conversation_id: str
    history: tuple[StoredMessage, ...]  # ends with the user message being answered
    request: ChatRequest
    system_prompt: str
    # Stored tool calls by assistant message id, so a builder renders earlier tool turns as the
    # plain chat does (``history_messages(..., tool_calls=...)``).
    tool_calls: Mapping[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnJob:
    """A builder's job for a turn. ``on_submitted`` gets the job's handle (to follow its events);
    ``progress_label`` replaces the answer's own reading bar (the caller shows the numbers)."""

    job: Job
    on_submitted: Optional[Callable[[JobHandle], None]] = None
    progress_label: Optional[str] = None


JobBuilder = Callable[[TurnContext], Optional[TurnJob]]


@dataclass
class StreamingTurn:
    """One answer being streamed: its job, where it is stored, and what has arrived so far."""

    handle: JobHandle
    conversation_id: str
    message_id: int
    answer: str = ""
    thinking: str = ""
    started_at: float = field(default_factory=time.monotonic)
    thinking_started_at: Optional[float] = None
    thinking_s: Optional[float] = None
    finish_reason: Optional[str] = None
    stats: Optional[dict[str, Any]] = None
    error: str = ""
    cancel_requested: bool = False
    dirty: bool = False
    # Live figures while streaming (the engine's exact stats replace them at the end).
    prompt_floor: int = 0  # the previous answer's prompt: this prompt holds all of it
    prompt_tokens: Optional[int] = None
    deltas: int = 0  # engine deltas so far, about one per token
    first_delta_at: Optional[float] = None
    live_emitted_at: float = float("-inf")
    # Shown again when the user comes back to this chat mid-answer.
    prefill: Optional[tuple[int, int, Optional[float]]] = None  # the last PrefillProgress
    progress_label: Optional[str] = None  # TurnJob.progress_label
    reading_started_at: Optional[float] = None  # the first PrefillProgress (the engine's clock)
    tools: Any = None  # app.tools.turn.ToolTurn when the turn may call tools
    tool_notice: str = ""  # why tools were not offered this turn


def forget_conversation_job(conversation_id: str) -> Job:
    """Drop the engine's prompt cache of a deleted conversation (no model loaded: nothing to do)."""

    def job(engine: Optional[InferenceEngine], _cancel: object) -> Iterable[object]:
        if engine is not None and hasattr(engine, "forget_conversation"):
            engine.forget_conversation(conversation_id)
        return ()

    return job


def last_prompt_tokens(history: Iterable[StoredMessage]) -> int:
    for message in reversed(tuple(history)):
        if message.role == "assistant" and message.stats:
            return int(message.stats.get("prompt_tokens") or 0)
    return 0


def title_from(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_MAX_CHARS:
        return words or DEFAULT_TITLE
    return words[:TITLE_MAX_CHARS].rsplit(" ", 1)[0].rstrip(",.;:") + "\u2026"
