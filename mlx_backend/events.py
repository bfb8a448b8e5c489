"""The request the UI sends and the events the engine streams back.

Data flows one way: UI -> worker -> ``Engine.stream(request)`` -> events -> UI.
Everything here is plain data (no MLX, no Qt) so both sides can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Union

Role = Literal["system", "user", "assistant", "tool"]
# Every role a message may have (the one list the engine and the chat template check).
ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    # An assistant turn's tool calls (rendered by the template after its content); a "tool"
    # message that follows holds one call's result as its content.
    tool_calls: tuple["ToolCall", ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    top_k: int
    min_p: float = 0.0
    presence_penalty: float = 0.0


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    # Key of the per-conversation prompt cache; None means "no reuse".
    conversation_id: Optional[str] = None
    # None: the model's default (hybrid Qwen3 thinks; 2507 models have one fixed mode).
    enable_thinking: Optional[bool] = None
    # None: Qwen3's recommended preset for the thinking mode in effect.
    sampling: Optional[SamplingParams] = None
    max_tokens: int = 8192
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None
    # Optional KV-cache quantization for long contexts (None, 8 or 4).
    kv_bits: Optional[int] = None
    # Long documents: extend a hybrid model's context with YaRN for this request.
    yarn_factor: Optional[float] = None
    # Templates that take it (Qwen3.8: "xhigh", "medium", "low"); None: the template's default.
    # EngineInfo.reasoning_efforts lists what the loaded model accepts.
    reasoning_effort: Optional[str] = None
    # Keep earlier turns' reasoning in the prompt (Qwen3.6's preserve_thinking); None: the
    # template's default. Only for templates that offer it (EngineInfo.can_preserve_thinking).
    preserve_thinking: Optional[bool] = None
    # Tools the model may call (OpenAI-style: {"type": "function", "function": {"name",
    # "description", "parameters"}}), rendered by the model's own template. Calls in the answer
    # then come back as ToolCallEvent, never as answer text.
    tools: tuple[Mapping[str, Any], ...] = ()
    # Text completion (the server's /v1/completions): this prompt as is, no chat template and no
    # thinking; ``messages`` must then be empty. Control tokens written in it become their ids.
    raw_prompt: Optional[str] = None
    # Speculative decoding with the engine's draft model, when it was loaded with one.
    use_draft_model: bool = True
    # Drafting with the model's own multi-token-prediction layer (Qwen3.5 family, Qwen3-Next),
    # when the engine loaded one and no draft model is used: output is unchanged (greedy:
    # token-identical), only faster where the guesses are accepted.
    use_mtp: bool = True
    # Prompt-lookup drafting (guesses copied from the prompt, no draft model): "auto" tries it
    # for long prompts (documents, pastes) and keeps it only while it pays; "on" or "off".
    prompt_lookup: str = "auto"


@dataclass(frozen=True)
class PrefillProgress:
    done: int
    total: int
    eta_s: Optional[float]


@dataclass(frozen=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class GenerationStats:
    prompt_tokens: int
    # Prompt tokens served from the conversation's prompt cache (not prefilled again).
    cached_tokens: int
    generation_tokens: int
    ttft_s: float
    prompt_tps: float
    generation_tps: float
    peak_memory_gb: float
    # Speculative decoding: "draft-model", "prompt-lookup" or None (plain decoding).
    speculative: Optional[str] = None
    drafted_tokens: int = 0  # tokens proposed by the drafter
    accepted_tokens: int = 0  # of those, tokens the target model kept
    # Measured plain time per token over drafted time per token in this answer (None: unknown).
    speculative_speedup: Optional[float] = None
    # Drafting turned out slower than plain decoding, which took over for the rest.
    speculative_fell_back: bool = False

    @property
    def acceptance_rate(self) -> Optional[float]:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    stats: GenerationStats


@dataclass(frozen=True)
class Failed:
    message: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    raw: str  # the text between <tool_call> and </tool_call>, as the model wrote it


@dataclass(frozen=True)
class MalformedToolCall:
    raw: str
    error: str  # what is wrong, in words fit for the user and for the model


@dataclass(frozen=True)
class ToolCallEvent:
    """A complete tool call in the answer (a malformed one too: show it, tell the model)."""

    index: int  # 0, 1, ... within this reply
    call: Union[ToolCall, MalformedToolCall]


Event = Union[PrefillProgress, ThinkingDelta, AnswerDelta, ToolCallEvent, Finished, Failed]
