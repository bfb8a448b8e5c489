"""Which stored messages form the history a model is sent: the one rule for every request.

The system prompt (if any) comes first; then user and assistant messages in order, leaving out
failed or empty answers (they are not something the model said) and any other role. ``replaced``
swaps a message's text for what was really sent in its place (a document turn's prompt).
An answer goes with its reasoning, as the model wrote it: templates that keep earlier reasoning
(Qwen3.8, Qwen3.6 with preserve_thinking) show it to the model again, the others drop it, and
either way the prompt matches what the engine's cache holds for that reply.

An answer that called tools (``tool_calls``: the store's rows by message id) becomes what the
tool loop sent: per step an assistant message with its calls and one "tool" message per result,
then what the model wrote after the last results.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from app.chat.store import StoredMessage, StoredToolCall
from mlx_backend.events import ChatMessage, ToolCall
from mlx_backend.text.thinking import reply_with_reasoning


def history_messages(system_prompt: str, history: Iterable[StoredMessage], *,
                     replaced: Mapping[int, str] = {},
                     tool_calls: Mapping[int, list[StoredToolCall]] = {}) -> tuple[ChatMessage, ...]:
    messages: list[ChatMessage] = []
    if system_prompt.strip():
        messages.append(ChatMessage("system", system_prompt.strip()))
    for message in history:
        if message.role == "assistant" and tool_calls.get(message.id) and message.status != "error":
            messages += _tool_turn(message, tool_calls[message.id])
            continue
        if message.role == "assistant" and (message.status == "error" or not message.content.strip()):
            continue
        content = replaced.get(message.id, message.content)
        if message.role == "assistant":
            content = reply_with_reasoning(message.thinking, content, thought=bool(message.thinking.strip()))
        if message.role in ("user", "assistant"):
            messages.append(ChatMessage(message.role, content))
    return tuple(messages)


# Shown (and stored) between one step's text and the next, so they don't run together.
STEP_SEPARATOR = "\n\n"


def _tool_turn(message: StoredMessage, calls: list[StoredToolCall]) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    answer_used = thinking_used = 0
    for step in sorted({c.step for c in calls}):
        step_calls = [c for c in calls if c.step == step]
        first = step_calls[0]
        answer_used += len(first.step_answer) + (len(STEP_SEPARATOR) if first.step_answer else 0)
        thinking_used += len(first.step_thinking)
        # As the loop sends it: a malformed call stays in the text, the others are calls.
        broken = "".join(f"<tool_call>{c.raw}</tool_call>" for c in step_calls if c.status == "malformed")
        answer = first.step_answer + (("\n" if first.step_answer else "") + broken if broken else "")
        calls_made = tuple(ToolCall(c.name, c.arguments, c.raw) for c in step_calls if c.status != "malformed")
        content = reply_with_reasoning(first.step_thinking, answer, thought=bool(first.step_thinking))
        out.append(ChatMessage("assistant", content, tool_calls=calls_made))
        out += [ChatMessage("tool", c.result) for c in step_calls]
    answer, thinking = message.content[answer_used:], message.thinking[thinking_used:]
    if answer.strip():
        out.append(ChatMessage("assistant", reply_with_reasoning(thinking, answer, thought=bool(thinking.strip()))))
    return out
