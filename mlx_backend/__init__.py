"""Qwen3 inference on MLX: the stable API is what this package root exports (``__all__``).

    from mlx_backend import Engine, ChatRequest, ChatMessage, AnswerDelta

    engine = Engine.load("mlx-community/Qwen3-4B-Instruct-2507-4bit")
    request = ChatRequest(messages=(ChatMessage("user", "Hello"),), max_tokens=200)
    for event in engine.stream(request):
        if isinstance(event, AnswerDelta):
            print(event.text, end="")

``load(path_or_repo)`` returns ``(model, tokenizer)`` for callers that want the model itself.
Sub-modules are internals and may change. This package never imports Qt; the request, event and
error types are plain data, and MLX is imported only when ``load``, ``Engine`` or ``EngineInfo``
is first used (PEP 562), so the GUI can import ``mlx_backend.events`` without loading MLX.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlx_backend.errors import (
    ContextOverflowError,
    DocumentError,
    DownloadError,
    ModelLoadError,
    QwenDeskError,
    RequestError,
)
from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    ChatRequest,
    Event,
    Failed,
    FinishReason,
    Finished,
    GenerationStats,
    PrefillProgress,
    MalformedToolCall,
    SamplingParams,
    ThinkingDelta,
    ToolCall,
    ToolCallEvent,
)

if TYPE_CHECKING:
    from mlx_backend.generation.engine import Engine, EngineInfo
    from mlx_backend.loading.loader import load

# The names that need MLX, and the module each one lives in.
_LAZY = {
    "load": "mlx_backend.loading.loader",
    "Engine": "mlx_backend.generation.engine",
    "EngineInfo": "mlx_backend.generation.engine",
}

__all__ = [
    # loading and generating
    "load",
    "Engine",
    "EngineInfo",
    # the request
    "ChatRequest",
    "ChatMessage",
    "SamplingParams",
    # the events a stream yields
    "Event",
    "PrefillProgress",
    "ThinkingDelta",
    "AnswerDelta",
    "ToolCallEvent",
    "ToolCall",
    "MalformedToolCall",
    "Finished",
    "Failed",
    "FinishReason",
    "GenerationStats",
    # errors whose message is fit to show a user
    "QwenDeskError",
    "ModelLoadError",
    "DownloadError",
    "RequestError",
    "ContextOverflowError",
    "DocumentError",
]


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
