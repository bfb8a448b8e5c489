"""The engine's events -> an Anthropic message, as stream events and as the whole message.

One builder serves both answers, so a streamed reply assembles (``messages.stream(...)``,
``get_final_message()``) into exactly what the non-streamed one returns. Content blocks come
in the order the model wrote them: its thinking, its text, its tool calls.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional, Sequence

from mlx_backend.events import (
    AnswerDelta,
    Finished,
    MalformedToolCall,
    PrefillProgress,
    ThinkingDelta,
    ToolCallEvent,
)
from mlx_backend.text.thinking import partial_suffix_length
from mlx_backend.tools.tool_calls import CLOSE, OPEN

StreamEvent = tuple[str, dict[str, Any]]  # (SSE event name, its data)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


class StopMatcher:
    """Finds the first of ``stops`` in streamed text, and says which one it was.

    The engine cuts at stop strings too, but doesn't say which one matched (Anthropic's
    ``stop_sequence`` must), so the server matches them itself, in the answer text only
    (not in the reasoning), and cancels the generation at the match.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(stops)
        self._pending = ""
        self.matched: Optional[str] = None

    def feed(self, text: str) -> str:
        """The text safe to show now: none past a stop, none that may begin one."""
        if not self._stops or self.matched is not None:
            return "" if self.matched is not None else text
        buffer = self._pending + text
        hits = [(buffer.find(stop), stop) for stop in self._stops if stop in buffer]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self._pending = ""
            return buffer[:at]
        hold = max(partial_suffix_length(buffer, stop) for stop in self._stops)
        self._pending = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return "" if self.matched is not None else text


class ReplyBuilder:
    """Feed engine events; get the SSE events to send and, at the end, the message."""

    def __init__(self, model_id: str, stop_sequences: Sequence[str] = ()) -> None:
        self.id = new_id("msg")
        self.model = model_id
        self.blocks: list[dict[str, Any]] = []
        self._open: Optional[str] = None  # the type of the last block while it is open
        self._stops = StopMatcher(stop_sequences)
        self.finished: Optional[Finished] = None

    @property
    def stop_sequence(self) -> Optional[str]:
        return self._stops.matched

    @property
    def stopped_early(self) -> bool:
        """A stop sequence matched: the caller should cancel the generation."""
        return self._stops.matched is not None

    def start(self) -> StreamEvent:
        message = {**self._envelope(), "content": [], "stop_reason": None, "stop_sequence": None}
        message["usage"] = {"input_tokens": 0, "output_tokens": 0}
        return "message_start", {"type": "message_start", "message": message}

    def feed(self, event: object) -> list[StreamEvent]:
        if isinstance(event, ThinkingDelta):
            if self.stopped_early:
                return []
            return self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, AnswerDelta):
            return self._text(self._stops.feed(event.text))
        if isinstance(event, ToolCallEvent):
            return [] if self.stopped_early else self._tool_call(event)
        if isinstance(event, Finished):
            self.finished = event
            return [*self._text(self._stops.flush()), *self._close()]
        if isinstance(event, PrefillProgress):
            return [("ping", {"type": "ping"})]  # keeps proxies from timing out a long prefill
        return []

    @property
    def stop_reason(self) -> str:
        if self.stop_sequence is not None:
            return "stop_sequence"
        if any(block["type"] == "tool_use" for block in self.blocks):
            return "tool_use"
        if self.finished is not None and self.finished.reason == "length":
            return "max_tokens"
        return "end_turn"

    def usage(self) -> dict[str, int]:
        """Anthropic's split: ``input_tokens`` excludes what was read from the prompt cache."""
        stats = self.finished.stats if self.finished else None
        prompt, cached = (stats.prompt_tokens, stats.cached_tokens) if stats else (0, 0)
        return {
            "input_tokens": prompt - cached,
            "output_tokens": stats.generation_tokens if stats else 0,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0,
        }

    def end(self) -> list[StreamEvent]:
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        return [
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": self.usage()}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def message(self) -> dict[str, Any]:
        content = self.blocks or [{"type": "text", "text": ""}]
        return {
            **self._envelope(),
            "content": content,
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage(),
        }

    # ------------------------------------------------------------------ blocks

    def _envelope(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model}

    def _text(self, text: str) -> list[StreamEvent]:
        return self._delta("text", {"type": "text_delta", "text": text}) if text else []

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[StreamEvent]:
        events = [] if self._open == kind else [*self._close(), self._begin(kind)]
        block = self.blocks[-1]
        block[kind] += delta[kind]
        return [*events, ("content_block_delta", {"type": "content_block_delta", "index": len(self.blocks) - 1, "delta": delta})]

    def _begin(self, kind: str, **fields: Any) -> StreamEvent:
        block: dict[str, Any] = {"type": kind, **fields}
        if kind == "text":
            block["text"] = ""
        elif kind == "thinking":
            block.update(thinking="", signature="")
        self.blocks.append(block)
        self._open = kind
        start = {**block, "input": {}} if kind == "tool_use" else dict(block)
        return "content_block_start", {"type": "content_block_start", "index": len(self.blocks) - 1, "content_block": start}

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index = len(self.blocks) - 1
        events: list[StreamEvent] = []
        if self._open == "thinking":
            # No signature: local reasoning isn't signed (clients send the block back as is).
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": ""}}))
        self._open = None
        return [*events, ("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _tool_call(self, event: ToolCallEvent) -> list[StreamEvent]:
        call = event.call
        if isinstance(call, MalformedToolCall):
            # Shown as the model wrote it: the agent (or its user) can see what went wrong.
            return self._text(f"{OPEN}{call.raw}{CLOSE}")
        events = [*self._close(), self._begin("tool_use", id=new_id("toolu"), name=call.name, input=call.arguments)]
        index = len(self.blocks) - 1
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": json.dumps(call.arguments, ensure_ascii=False)}}))
        return [*events, *self._close()]


def sse(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event as Anthropic writes them."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
