"""The worker job of a chat turn with tools: list the servers' tools, then run the tool loop
with a runner that asks the user (``approval.py``) and gives up at once when Stop is pressed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Optional

from app.tools.service import ToolService
from app.worker.protocols import InferenceEngine, Job
from mlx_backend.events import ChatRequest, ToolCall
from mlx_backend.tools.loop import ToolOutcome, run_tool_loop
from mlx_backend.tools.mcp import McpError, openai_tools
from mlx_backend.tools.mcp.runner import McpToolRunner

# approve(call, server, tool, cancel) -> bool, called on the worker thread.
Approve = Callable[[ToolCall, str, str, threading.Event], bool]
POLL_S = 0.05


@dataclass(frozen=True)
class ToolsUnavailable:
    """The turn goes on without tools: why (a broken mcp.json, no server started)."""

    message: str


class StoppableRunner:
    """Runs each call on a helper thread so Stop ends the turn at once, even mid-call (the
    hub gives up on the call itself at its own timeout)."""

    def __init__(self, inner: McpToolRunner) -> None:
        self._inner = inner

    def run(self, call: ToolCall, cancel: threading.Event) -> ToolOutcome:
        box: list[ToolOutcome] = []
        done = threading.Event()

        def work() -> None:
            try:
                box.append(self._inner.run(call, cancel))
            except Exception as error:  # noqa: BLE001 - a runner's failure is the model's to read
                box.append(ToolOutcome(text=f"Error: {error}", is_error=True, tool=call.name))
            done.set()

        threading.Thread(target=work, name="tool-call", daemon=True).start()
        while not done.wait(POLL_S):
            if cancel.is_set():
                return ToolOutcome(text="Stopped by the user before the tool finished.", is_error=True, tool=call.name)
        return box[0]


def tool_turn_job(request: ChatRequest, service: ToolService, approve: Approve, max_steps: int) -> Job:
    def job(engine: Optional[InferenceEngine], cancel: threading.Event) -> Iterator[object]:
        assert engine is not None
        try:
            hub = service.hub()
            schemas, names = openai_tools(hub.tools())
        except McpError as error:
            yield ToolsUnavailable(str(error))
            schemas = []
        if not schemas:
            yield from engine.stream(request, cancel)
            return
        inner = McpToolRunner(hub, names, lambda call, server, tool: approve(call, server, tool, cancel),
                              timeout_s=service.call_timeout_s)
        yield from run_tool_loop(engine, replace(request, tools=tuple(schemas)), StoppableRunner(inner), cancel,
                                 max_steps=max_steps)

    return job
