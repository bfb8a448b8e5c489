"""Split a streamed Qwen3 reply into its thinking and its answer.

Qwen3 replies look like ``<think>\\nreasoning\\n</think>\\n\\nanswer``. Hybrid models write both
tags; Thinking-2507 models get ``<think>\\n`` from the chat template and write only ``</think>``;
with thinking switched off a hybrid model gets (or writes) an empty block ``<think>\\n\\n</think>\\n\\n``.
Text arrives in arbitrary chunks, so a tag may be split ("<thi" + "nk>"): the parser holds back
just enough text to decide, and nothing else.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Optional, Union

from mlx_backend.text.chat_template import THINK_CLOSE, THINK_OPEN, ThinkingMode, ends_inside_thinking
from mlx_backend.events import AnswerDelta, ThinkingDelta

__all__ = [
    "ThinkingParser",
    "resolve_thinking",
    "reply_with_reasoning",
    "partial_suffix_length",
    "ends_inside_thinking",
    "THINK_OPEN",
    "THINK_CLOSE",
]

ParsedDelta = Union[ThinkingDelta, AnswerDelta]


class _Phase(Enum):
    START = "start"  # nothing but whitespace seen yet: a <think> may still open
    THINKING = "thinking"
    ANSWER = "answer"


def partial_suffix_length(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``.

    That much of streamed text must be held back: it may be a tag or stop string cut in two.
    """
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


class ThinkingParser:
    """Feed decoded text chunks; get ThinkingDelta / AnswerDelta events back.

    A thinking block is recognised only at the very start of the reply (after optional whitespace)
    and closes at the first </think>; tags anywhere else are ordinary answer text. Newlines that
    only frame the thought or the answer are dropped.
    """

    def __init__(self, starts_inside_thinking: bool) -> None:
        self._phase = _Phase.THINKING if starts_inside_thinking else _Phase.START
        self._pending = ""
        self._thought_started = False
        self._answer_started = False
        self.saw_thinking = starts_inside_thinking

    @property
    def in_thinking(self) -> bool:
        return self._phase is _Phase.THINKING

    def feed(self, text: str) -> list[ParsedDelta]:
        self._pending += text
        return self._drain(final=False)

    def flush(self) -> list[ParsedDelta]:
        """End of the reply: release whatever was held back (a tag that never completed is text)."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[ParsedDelta]:
        thinking: list[str] = []
        answer: list[str] = []
        while True:
            if self._phase is _Phase.START:
                stripped = self._pending.lstrip()
                if stripped.startswith(THINK_OPEN):
                    self._pending = stripped[len(THINK_OPEN) :]
                    self._phase = _Phase.THINKING
                    self.saw_thinking = True
                    continue
                if not final and THINK_OPEN.startswith(stripped):
                    break  # still could be "<think>" (or nothing but whitespace so far)
                self._phase = _Phase.ANSWER
                continue
            if self._phase is _Phase.THINKING:
                if not self._thought_started and not self._skip_thought_preamble(final):
                    break
                close_at = self._pending.find(THINK_CLOSE)
                if close_at != -1:
                    thinking.append(self._pending[:close_at].rstrip("\n"))
                    self._pending = self._pending[close_at + len(THINK_CLOSE) :]
                    self._phase = _Phase.ANSWER
                    continue
                if final:
                    thinking.append(self._pending.rstrip("\n"))
                    self._pending = ""
                    break
                # Hold back a possibly split </think> and trailing newlines (they may frame </think>).
                body = self._pending[: len(self._pending) - partial_suffix_length(self._pending, THINK_CLOSE)]
                emit = body.rstrip("\n")
                thinking.append(emit)
                self._pending = self._pending[len(emit) :]
                break
            # ANSWER
            if not self._answer_started:
                self._pending = self._pending.lstrip("\r\n")
                if not self._pending:
                    break
                self._answer_started = True
            answer.append(self._pending)
            self._pending = ""
            break
        thought, reply = "".join(thinking), "".join(answer)
        events: list[ParsedDelta] = []
        if thought:
            events.append(ThinkingDelta(thought))
        if reply:
            events.append(AnswerDelta(reply))
        return events

    def _skip_thought_preamble(self, final: bool) -> bool:
        """Drop the newlines after <think> (and a <think> the model repeats after the template's).

        Returns False while it cannot yet tell where the thought starts.
        """
        while True:
            stripped = self._pending.lstrip("\n")
            if stripped.startswith(THINK_OPEN):
                self._pending = stripped[len(THINK_OPEN) :]
                continue
            if not final and THINK_OPEN.startswith(stripped):
                return False
            self._pending = stripped
            self._thought_started = True
            return True


def reply_with_reasoning(thinking: str, answer: str, *, thought: bool = True) -> str:
    """An assistant message's content with its reasoning, as the model wrote it.

    Send earlier replies this way: templates that keep reasoning in history (Qwen3.8, Qwen3.6
    with preserve_thinking) then render it back, the others drop it. ``thought=False`` (no
    thinking block at all) gives the answer alone.
    """
    if not thought:
        return answer
    return f"{THINK_OPEN}\n{thinking}\n{THINK_CLOSE}\n\n{answer}"


# `/think` or `/no_think` as a word of its own (not part of a path or of "/thinking").
_SOFT_SWITCH = re.compile(r"(?<![\w/])/(no_think|think)(?![\w/])")


def soft_switch(text: str) -> Optional[bool]:
    """The last /think (True) or /no_think (False) in ``text``, or None when there is neither."""
    matches = _SOFT_SWITCH.findall(text or "")
    if not matches:
        return None
    return matches[-1] == "think"


def resolve_thinking(
    last_user_text: str,
    enable_thinking: Optional[bool],
    thinking_mode: ThinkingMode,
    *,
    soft_switches: bool = True,
    default: bool = True,
) -> bool:
    """Will the model think in this turn?

    2507 models have one fixed mode and ignore every switch. A hybrid model does what its
    template does by default (``default``: think, for nearly all); ``enable_thinking=False`` is
    a hard switch (the template closes the think block, and Qwen documents that /think is then
    ignored); otherwise, for models that honour ``soft_switches``
    (Qwen3, not the Qwen3.5 family, which dropped them), the last /think or /no_think in the
    latest user message decides, as Qwen documents.
    """
    if thinking_mode == "always":
        return True
    if thinking_mode == "never":
        return False
    if enable_thinking is False:
        return False
    switch = soft_switch(last_user_text) if soft_switches else None
    if switch is not None:
        return switch
    return True if enable_thinking else default
