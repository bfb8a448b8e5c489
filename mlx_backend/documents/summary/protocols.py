"""What the summary needs from a tokenizer and an engine: the real ones, or test stand-ins."""

from __future__ import annotations

import threading
from typing import Any, Iterator, Optional, Protocol, Sequence, Union

from mlx_backend.events import ChatMessage, ChatRequest


class SummaryTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def apply_chat_template(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tokenize: bool = True,
        sanitize_control_tokens: bool = False,
    ) -> Union[list[int], str]: ...


class ModelInfo(Protocol):
    name: str
    thinking_mode: str  # "hybrid", "always" or "never"


class SummaryEngine(Protocol):
    tokenizer: SummaryTokenizer

    @property
    def info(self) -> ModelInfo: ...

    # The loaded model: ``load_info.config`` (its config.json) when read from a folder, else only
    # ``args``; an optional attribute no Protocol can state.
    model: Any

    def stream(self, request: ChatRequest, cancel: Optional[threading.Event] = None) -> Iterator[object]: ...
