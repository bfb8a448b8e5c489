"""One chat's own settings (the Chat Settings panel) and how they shape its requests (no Qt).

Every field is an override: None keeps the app's default (Settings: the system prompt, the
sampling preset; Qwen's recommended values for the thinking mode in effect; the request's
default answer length; the model's native context). Stored as JSON on the conversation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from mlx_backend.events import ChatRequest, SamplingParams

# ChatRequest's own default answer length: what "Max answer length" falls back to.
DEFAULT_MAX_TOKENS = ChatRequest.__dataclass_fields__["max_tokens"].default
# Qwen's long-context setting (mlx_backend.models.limits.DEFAULT_YARN_FACTOR, which imports MLX).
LONG_CONTEXT_YARN_FACTOR = 4.0


@dataclass(frozen=True)
class ChatSettings:
    system_prompt: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    max_tokens: Optional[int] = None
    # True: extend the context with YaRN (the model's published recipe); None/False: native.
    long_context: Optional[bool] = None

    @property
    def is_default(self) -> bool:
        return self == ChatSettings()

    @property
    def overrides_sampling(self) -> bool:
        return any(v is not None for v in (self.temperature, self.top_p, self.top_k))

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Optional[dict[str, Any]]) -> "ChatSettings":
        """Lenient: a value of the wrong type is dropped (the default applies), never fatal."""
        data = data or {}

        def number(key: str, kind: type) -> Any:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            return kind(value)

        prompt = data.get("system_prompt")
        long_context = data.get("long_context")
        return cls(
            system_prompt=prompt if isinstance(prompt, str) else None,
            temperature=number("temperature", float),
            top_p=number("top_p", float),
            top_k=number("top_k", int),
            max_tokens=number("max_tokens", int),
            long_context=long_context if isinstance(long_context, bool) else None,
        )


@dataclass(frozen=True)
class ChatDefaults:
    """What a chat gets without settings of its own, and what the loaded model allows."""

    system_prompt: str
    sampling: SamplingParams
    thinking: bool
    # Qwen's recommended sampling is in effect (not a preset chosen in Settings).
    recommended: bool
    max_tokens: int
    native_context: Optional[int] = None
    # With YaRN (None: the model has no published recipe, or none is loaded).
    long_context: Optional[int] = None
    model: Optional[str] = None  # the model that last answered in this chat


def recommended_sampling(thinking: bool) -> SamplingParams:
    """Qwen's published sampling for the mode (0.6/0.95/20 thinking, 0.7/0.8/20 not)."""
    from mlx_backend.generation.sampling import preset_for  # imports MLX: only when needed

    return preset_for(thinking)


def greedy_warning(temperature: Optional[float]) -> str:
    """Qwen's cards warn against greedy decoding: a sentence to show when it is chosen."""
    if temperature is not None and temperature <= 0:
        return ("Temperature 0 always picks the likeliest word: Qwen models then tend to repeat "
                "themselves endlessly. Qwen recommends 0.6 (thinking) or 0.7.")
    return ""


def apply_chat_settings(request: ChatRequest, chat: ChatSettings, *, thinking: bool,
                        base_sampling: Optional[SamplingParams], can_extend: bool) -> ChatRequest:
    """``request`` with this chat's overrides. ``base_sampling``: the app's preset (None:
    Qwen's recommended for ``thinking``); ``can_extend``: the model has a YaRN recipe."""
    changes: dict[str, Any] = {}
    if chat.overrides_sampling:
        base = base_sampling or recommended_sampling(thinking)
        changes["sampling"] = dataclasses.replace(
            base,
            temperature=base.temperature if chat.temperature is None else chat.temperature,
            top_p=base.top_p if chat.top_p is None else chat.top_p,
            top_k=base.top_k if chat.top_k is None else chat.top_k,
        )
    if chat.max_tokens is not None:
        changes["max_tokens"] = chat.max_tokens
    if chat.long_context and can_extend:
        changes["yarn_factor"] = LONG_CONTEXT_YARN_FACTOR
    return dataclasses.replace(request, **changes) if changes else request


def effective_system_prompt(chat: ChatSettings, app_prompt: str) -> str:
    return app_prompt if chat.system_prompt is None else chat.system_prompt
