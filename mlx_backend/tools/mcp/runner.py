"""Running the model's tool calls on MCP servers, each one only once it is approved.

``McpToolRunner(hub, names, approve)`` is the ``ToolRunner`` of the tool loop
(``mlx_backend/tools/loop.py``) for MCP tools: it maps the model's name for a tool back to its
server, asks ``approve(call, server, tool)`` (the app shows a dialog; the CLI checks
``--allow-tools``), and runs it with a timeout. Every failure - an unknown tool, a server that
won't start, crashes or times out - becomes an error result the model reads, never an exception
that would end the turn.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

from mlx_backend.events import ToolCall
from mlx_backend.tools.loop import ToolImage, ToolOutcome, denied
from mlx_backend.tools.mcp.errors import McpError
from mlx_backend.tools.mcp.hub import DEFAULT_CALL_TIMEOUT_S, McpHub
from mlx_backend.tools.mcp.results import ImagePart
from mlx_backend.tools.mcp.schema import ToolNames

# approve(call, server, tool) -> True to run it. May block (a dialog) and should give up
# (return False) when cancel is set.
Approver = Callable[[ToolCall, str, str], bool]


def _image(part: ImagePart) -> ToolImage | None:
    try:
        return ToolImage(part.mime_type, part.data)
    except ValueError:  # not valid base64 (binascii.Error): left out rather than failing the call
        return None


class McpToolRunner:
    def __init__(self, hub: McpHub, names: ToolNames, approve: Approver, *, timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self._hub = hub
        self._names = names
        self._approve = approve
        self.timeout_s = timeout_s

    def run(self, call: ToolCall, cancel: threading.Event) -> ToolOutcome:
        try:
            server, tool = self._names.resolve(call.name)
        except McpError as error:
            return ToolOutcome(text=f"Error: {error}", is_error=True, tool=call.name)
        if cancel.is_set() or not self._approve(call, server, tool):
            return replace(denied(call), server=server, tool=tool)
        started = time.perf_counter()
        try:
            result = self._hub.call(server, tool, call.arguments, self.timeout_s)
        except McpError as error:
            return ToolOutcome(
                text=f"Error: {error}", is_error=True, server=server, tool=tool,
                duration_s=time.perf_counter() - started,
            )
        images = tuple(image for p in result.content if isinstance(p, ImagePart) and (image := _image(p)) is not None)
        text = result.text
        if not text and images:
            text = f"(The tool returned {len(images)} image(s), shown to the user; you can't see images.)"
        return ToolOutcome(
            text=text or "(no output)", is_error=result.is_error, images=images,
            duration_s=result.duration_s, server=server, tool=tool,
        )
