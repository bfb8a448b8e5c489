"""Server-sent events, as both OpenAI and Anthropic stream them: ``event:`` (optional) and one
``data:`` line of JSON per event, a blank line after each."""

from __future__ import annotations

import json
from typing import Any, Optional

MEDIA_TYPE = "text/event-stream"
# No proxy buffering, no caching: each event must reach the client as it is written.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_event(data: Any, event: Optional[str] = None) -> bytes:
    """One event; ``data`` is JSON-encoded unless it is already text (OpenAI's ``[DONE]``)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def sse_comment(name: str, data: Any) -> bytes:
    """A comment line (``: name {json}``): SSE clients skip it; ours reads it."""
    return f": {name} {json.dumps(data, separators=(',', ':'))}\n\n".encode()
