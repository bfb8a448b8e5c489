"""The tool loop: the model calls tools, they run, their results go back, the model continues.

``run_tool_loop(engine, request, runner, cancel)`` is one straight loop over engine steps. Each
step is an ordinary ``engine.stream`` of the conversation so far and yields its events
unchanged (so every step ends with its own ``Finished``). When a step ends at a natural stop
with tool calls, the loop appends the assistant turn (its reasoning kept the way the template
expects: ``reply_with_reasoning``; the template itself drops or keeps it) and one "tool"
message per call, in order, and starts the next step under the same conversation id, so the
prompt cache serves everything up to the new results.

Around each call it yields ``ToolCallStarted`` (before the runner decides: the app shows the
approval there) and ``ToolCallFinished`` with the ``ToolOutcome``. A malformed call is not run:
its error goes back to the model as the tool result so it can correct itself. The loop ends
when a step has no calls, stops for another reason (length, cancel, error), ``cancel`` is set,
or ``max_steps`` steps with calls have run (then ``ToolLoopLimit``). The iterator's end is the
end of the turn.

Whether a call may run is the runner's business (``ToolRunner``): the app asks the user, the
CLI checks ``--allow-tools``. Nothing here runs anything by itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Optional, Protocol, Union

from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    ChatRequest,
    Finished,
    MalformedToolCall,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
)
from mlx_backend.text.thinking import reply_with_reasoning

DEFAULT_MAX_STEPS = 8


@dataclass(frozen=True)
class ToolImage:
    """An image a tool returned: shown to the user; the model reads text only."""

    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ToolOutcome:
    """What came of one call. ``text`` is what the model reads back as the tool's result."""

    text: str
    is_error: bool = False
    denied: bool = False
    images: tuple[ToolImage, ...] = ()
    duration_s: float = 0.0
    server: str = ""  # where the tool lives (an MCP server's name), for the transcript
    tool: str = ""  # the tool's own name there (the model may know it by a prefixed one)


class ToolRunner(Protocol):
    def run(self, call: ToolCall, cancel: threading.Event) -> ToolOutcome:
        """Decide (ask, check a list) and run ``call``; a refusal is ``ToolOutcome(denied=True)``.

        Called on the loop's thread; may block (an approval dialog, a slow tool) but must
        return soon after ``cancel`` is set. Never raises for a tool's own failure: that is an
        outcome with ``is_error`` the model should read.
        """


@dataclass(frozen=True)
class ToolCallStarted:
    step: int  # 0 for the first model step of the turn
    index: int  # the call's place in that step's reply
    call: ToolCall


@dataclass(frozen=True)
class ToolCallFinished:
    step: int
    index: int
    call: Union[ToolCall, MalformedToolCall]
    outcome: ToolOutcome


@dataclass(frozen=True)
class ToolLoopLimit:
    """The loop stopped because ``max_steps`` steps with calls ran; the last results are in."""

    max_steps: int


ToolLoopEvent = Union[ToolCallStarted, ToolCallFinished, ToolLoopLimit]


def denied(call: ToolCall, reason: str = "The user denied this tool call.") -> ToolOutcome:
    return ToolOutcome(text=reason, denied=True, tool=call.name)


def malformed_outcome(call: MalformedToolCall) -> ToolOutcome:
    return ToolOutcome(
        text=f"Error: the tool call could not be read ({call.error}). Write it again in the format the tools were described in.",
        is_error=True,
    )


@dataclass
class _Step:
    """One model step's reply, gathered from its events."""

    thought: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    calls: list[Union[ToolCall, MalformedToolCall]] = field(default_factory=list)
    finished: Optional[Finished] = None

    def assistant_message(self) -> ChatMessage:
        calls = tuple(c for c in self.calls if isinstance(c, ToolCall))
        # A malformed call stays in the reply as the model wrote it, so the error that comes
        # back as its result refers to something the model can see.
        broken = "".join(f"<tool_call>{c.raw}</tool_call>" for c in self.calls if isinstance(c, MalformedToolCall))
        answer = "".join(self.answer) + (("\n" if self.answer else "") + broken if broken else "")
        content = reply_with_reasoning("".join(self.thought), answer, thought=bool(self.thought))
        return ChatMessage("assistant", content, tool_calls=calls)


def run_tool_loop(
    engine: Any,
    request: ChatRequest,
    runner: ToolRunner,
    cancel: Optional[threading.Event] = None,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Iterator[object]:
    """Stream ``request`` and every step its tool calls lead to (see the module docstring)."""
    cancel = cancel or threading.Event()
    messages = list(request.messages)
    for step in range(max_steps + 1):
        reply = _Step()
        for event in engine.stream(replace(request, messages=tuple(messages)), cancel):
            if isinstance(event, ThinkingDelta):
                reply.thought.append(event.text)
            elif isinstance(event, AnswerDelta):
                reply.answer.append(event.text)
            elif isinstance(event, ToolCallEvent):
                reply.calls.append(event.call)
            elif isinstance(event, Finished):
                reply.finished = event
            yield event
        if reply.finished is None or reply.finished.reason != "stop" or not reply.calls or cancel.is_set():
            return
        if step == max_steps:
            yield ToolLoopLimit(max_steps)
            return
        messages.append(reply.assistant_message())
        for index, call in enumerate(reply.calls):
            if isinstance(call, MalformedToolCall):
                outcome = malformed_outcome(call)
            else:
                yield ToolCallStarted(step, index, call)
                started = time.perf_counter()
                outcome = runner.run(call, cancel)
                if not outcome.duration_s:
                    outcome = replace(outcome, duration_s=time.perf_counter() - started)
            yield ToolCallFinished(step, index, call, outcome)
            messages.append(ChatMessage("tool", outcome.text))
            if cancel.is_set():
                return  # Stop ends the loop at once; results so far were reported
