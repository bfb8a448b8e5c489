"""Our server's streamed chat answer (server-sent events) back into engine events.

The inverse of ``mlx_backend/server/openai_api.py``'s ``Reply``: ``reasoning_content`` deltas are
``ThinkingDelta``, ``content`` is ``AnswerDelta``, each ``tool_calls`` entry a ``ToolCallEvent``,
a call the server could not read (sent back as its text, with a warning) a ``MalformedToolCall``
again, the ``: prefill`` comments ``PrefillProgress``, and usage plus ``timings`` the stats.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional

from mlx_backend.events import (
    AnswerDelta,
    Failed,
    Finished,
    GenerationStats,
    MalformedToolCall,
    PrefillProgress,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
)
from mlx_backend.tools.tool_calls import CLOSE, OPEN

# The server's words before the reason in a malformed call's warning.
_MALFORMED_PREFIX = "could not be read, so it is returned as text: "


@dataclass(frozen=True)
class SSE:
    """One server-sent event: its data, or a comment (``comment`` set, data empty)."""

    data: str = ""
    comment: Optional[str] = None


def sse_events(lines: Iterable[str]) -> Iterator[SSE]:
    """Server-sent events from a stream's lines (data lines joined; comments passed on)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield SSE("\n".join(data))
                data = []
        elif line.startswith(":"):
            yield SSE(comment=line[1:].strip())
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
        # "event:", "id:" and "retry:" lines: our server's chat stream sends none it needs.
    if data:
        yield SSE("\n".join(data))


@dataclass
class ReplyReader:
    """Turns a stream's events into engine events; ``started_at`` times the answer for stats
    the server did not send (an older server without ``timings``)."""

    started_at: float = field(default_factory=time.monotonic)
    first_token_at: Optional[float] = None
    tokens: int = 0
    calls: int = 0
    finish_reason: Optional[str] = None
    usage: Optional[Mapping[str, Any]] = None
    timings: Optional[Mapping[str, Any]] = None
    done: bool = False

    def read(self, event: SSE) -> list[object]:
        if event.comment is not None:
            return self._comment(event.comment)
        if event.data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(event.data)
        except json.JSONDecodeError:
            return [Failed(f"The server sent something that is not JSON: {event.data[:200]!r}.")]
        if not isinstance(chunk, Mapping):
            return []
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, Mapping) else str(error)
            return [Failed(str(message or "The server failed to answer."))]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), Mapping):
            self.timings = chunk["timings"]
        events: list[object] = []
        for choice in chunk.get("choices") or ():
            events.extend(self._delta(choice.get("delta") or {}, chunk.get("warnings") or ()))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _comment(self, text: str) -> list[object]:
        name, _, payload = text.partition(" ")
        if name != "prefill":
            return []
        try:
            values = json.loads(payload)
            return [PrefillProgress(int(values["done"]), int(values["total"]), values.get("eta_s"))]
        except (ValueError, KeyError, TypeError):
            return []

    def _delta(self, delta: Mapping[str, Any], warnings: Iterable[str]) -> list[object]:
        events: list[object] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            events.append(ThinkingDelta(reasoning))
        content = delta.get("content")
        if content:
            malformed = _malformed(content, warnings)
            if malformed is not None:
                events.append(ToolCallEvent(self.calls, malformed))
                self.calls += 1
            else:
                events.append(AnswerDelta(content))
        for entry in delta.get("tool_calls") or ():
            events.append(ToolCallEvent(self.calls, _tool_call(entry)))
            self.calls += 1
        if events and any(isinstance(e, (ThinkingDelta, AnswerDelta)) for e in events):
            self.tokens += 1
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
        return events

    def finished(self) -> Finished:
        """The end, with the server's figures (measured here where it sent none)."""
        usage = self.usage or {}
        timings = self.timings or {}
        details = usage.get("prompt_tokens_details") or {}
        generated = int(usage.get("completion_tokens", self.tokens))
        now = time.monotonic()
        ttft = (self.first_token_at or now) - self.started_at
        decode_s = now - (self.first_token_at or now)
        stats = GenerationStats(
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            cached_tokens=int(details.get("cached_tokens", 0) or 0),
            generation_tokens=generated,
            ttft_s=float(timings.get("ttft_s", ttft)),
            prompt_tps=float(timings.get("prompt_tps", 0.0)),
            generation_tps=float(timings.get("generation_tps", (generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0)),
            peak_memory_gb=float(timings.get("peak_memory_gb", 0.0)),
        )
        return Finished("length" if self.finish_reason == "length" else "stop", stats)


def _tool_call(entry: Mapping[str, Any]) -> ToolCall | MalformedToolCall:
    function = entry.get("function") or {}
    name = str(function.get("name") or "")
    raw_arguments = function.get("arguments") or "{}"
    try:
        arguments = json.loads(raw_arguments) if isinstance(raw_arguments, str) else dict(raw_arguments)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raw = json.dumps({"name": name, "arguments": raw_arguments}, ensure_ascii=False)
        return MalformedToolCall(raw, f"The arguments are not valid JSON: {error}")
    # Qwen3's own form of the call: what the model's template writes back into the history.
    raw = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return ToolCall(name, arguments, raw)


def _malformed(content: str, warnings: Iterable[str]) -> Optional[MalformedToolCall]:
    """The server's text form of a call it could not read (the chunk carries its warning)."""
    if not (content.startswith(OPEN) and content.endswith(CLOSE)):
        return None
    for warning in warnings:
        if _MALFORMED_PREFIX in warning:
            return MalformedToolCall(content[len(OPEN):-len(CLOSE)], warning.split(_MALFORMED_PREFIX, 1)[1])
    return None
