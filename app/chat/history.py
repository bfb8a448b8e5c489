"""Which stored messages form the history a model is sent: the one rule for every request.

The system prompt (if any) comes first; then user and assistant messages in order, leaving out
failed or empty answers (they are not something the model said) and any other role. ``replaced``
swaps a message's text for what was really sent in its place (a document turn's prompt).
An answer goes with its reasoning, as the model wrote it: templates that keep earlier reasoning
(Qwen3.8, Qwen3.6 with preserve_thinking) show it to the model again, the others drop it, and
either way the prompt matches what the engine's cache holds for that reply.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from app.chat.store import StoredMessage
from mlx_backend.events import ChatMessage
from mlx_backend.text.thinking import reply_with_reasoning


def history_messages(system_prompt: str, history: Iterable[StoredMessage], *,
                     replaced: Mapping[int, str] = {}) -> tuple[ChatMessage, ...]:
    messages: list[ChatMessage] = []
    if system_prompt.strip():
        messages.append(ChatMessage("system", system_prompt.strip()))
    for message in history:
        if message.role == "assistant" and (message.status == "error" or not message.content.strip()):
            continue
        content = replaced.get(message.id, message.content)
        if message.role == "assistant":
            content = reply_with_reasoning(message.thinking, content, thought=bool(message.thinking.strip()))
        if message.role in ("user", "assistant"):
            messages.append(ChatMessage(message.role, content))
    return tuple(messages)
