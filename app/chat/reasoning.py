"""The reasoning choices a chat request carries for templates that take them (no Qt).

The loaded model's ``EngineInfo`` says what its template offers: ``reasoning_efforts`` (levels,
default first; empty: none) and ``can_preserve_thinking``. The user's choices live in
``Settings``; these functions turn the two into the request's fields, so a choice made for one
model never reaches a template that would reject it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# What the menu calls the template's levels (Qwen3.8's "xhigh" is its highest, "High" to a user).
EFFORT_LABELS = {"xhigh": "High", "high": "High", "medium": "Medium", "low": "Low", "minimal": "Minimal"}
HISTORY_REASONING_VALUES: dict[str, Optional[bool]] = {"default": None, "keep": True, "drop": False}


def effort_label(level: str) -> str:
    return EFFORT_LABELS.get(level, level.replace("_", " ").capitalize())


def effort_levels(info: object) -> tuple[str, ...]:
    return tuple(getattr(info, "reasoning_efforts", ()) or ())


def can_preserve_thinking(info: object) -> bool:
    return bool(getattr(info, "can_preserve_thinking", False))


def effective_effort(chosen: str, levels: tuple[str, ...]) -> Optional[str]:
    """The level in effect: the user's choice where this model has it, else its default."""
    if not levels:
        return None
    return chosen if chosen in levels else levels[0]


@dataclass(frozen=True)
class ReasoningOptions:
    reasoning_effort: Optional[str] = None
    preserve_thinking: Optional[bool] = None


def reasoning_options(
    info: object, *, effort: str, history_reasoning: str, thinking: Optional[bool]
) -> ReasoningOptions:
    """The request's reasoning fields for the loaded model (``thinking``: the request's switch;
    False means no reasoning, so no effort is asked)."""
    levels = effort_levels(info)
    level = effort if effort in levels and thinking is not False else None
    preserve = HISTORY_REASONING_VALUES.get(history_reasoning) if can_preserve_thinking(info) else None
    return ReasoningOptions(reasoning_effort=level, preserve_thinking=preserve)
