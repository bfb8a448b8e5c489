"""A chat request checked and rendered into prompt ids, before any MLX work.

``validate_request`` turns a malformed request into a RequestError fit to show as is;
``PromptRenderer`` renders messages with the model's own template (control tokens typed inside
messages stay plain text), with the request's thinking, reasoning-effort and preserve-thinking
settings, and knows how a reply will look as history in the next prompt.

An assistant message's reasoning travels in its content as the model wrote it,
``<think>\nreasoning\n</think>\n\nanswer`` (``reply_with_reasoning``); the renderer hands it to
the template as ``reasoning_content``, which templates that keep reasoning (Qwen3.8, Qwen3.6 with
``preserve_thinking``) render back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from mlx_backend.errors import RequestError
from mlx_backend.events import ROLES, ChatMessage, ChatRequest, SamplingParams
from mlx_backend.generation.sampling import resolve_sampling, validate_seed
from mlx_backend.generation.stop_sequences import MAX_STOP_SEQUENCES
from mlx_backend.models.limits import MAX_YARN_FACTOR
from mlx_backend.text.chat_template import THINK_CLOSE, THINK_OPEN
from mlx_backend.text.thinking import ends_inside_thinking, resolve_thinking
from mlx_backend.text.tokenizer import Qwen3Tokenizer

# Stands in for the next user message when rendering how this reply will look in history.
_NEXT_TURN_MARKER = "\x00qwen-desk-next-turn\x00"
_TURN_START = "<|im_start|>"


@dataclass
class PreparedRequest:
    """A validated request turned into token ids and settings, before any MLX work."""

    request: ChatRequest
    prompt: list[int]
    thinking: bool
    starts_inside_thinking: bool
    sampling: SamplingParams
    max_tokens: int
    rope_scaling: Optional[dict[str, Any]]


def validate_request(request: ChatRequest) -> None:
    """Raise RequestError for a request the engine can't run (nothing is computed yet)."""
    if request.raw_prompt is not None:
        _validate_raw_prompt(request)
    else:
        _validate_messages(request.messages)
    _validate_settings(request)


def _validate_raw_prompt(request: ChatRequest) -> None:
    if not isinstance(request.raw_prompt, str) or not request.raw_prompt:
        raise RequestError("The prompt is empty: write some text for the model to continue.")
    if request.messages or request.tools:
        raise RequestError("A text completion takes a prompt only, not messages or tools.")


def _validate_messages(messages: tuple[ChatMessage, ...]) -> None:
    if not messages:
        raise RequestError("The conversation is empty: write a message first.")
    for position, message in enumerate(messages, start=1):
        role = getattr(message, "role", None)
        if role not in ROLES:
            raise RequestError(
                f"Message {position} has an unknown role {role!r}; use one of: {', '.join(ROLES)}."
            )
        if not isinstance(getattr(message, "content", None), str):
            raise RequestError(f"Message {position} ({role}) has no text.")
        calls = getattr(message, "tool_calls", ())
        if calls and role != "assistant":
            raise RequestError(f"Message {position} ({role}) has tool calls; only the assistant's may.")
        for call in calls:
            if not isinstance(getattr(call, "name", None), str) or not isinstance(getattr(call, "arguments", None), dict):
                raise RequestError(f"Message {position} has a tool call without a name and an arguments object.")
    last = messages[-1]
    if last.role not in ("user", "tool"):
        raise RequestError(
            f"The last message must be the user's or a tool result (it is from the {last.role}): "
            "the model answers those."
        )
    if last.role == "user" and not last.content.strip():
        raise RequestError("The last message is empty: write something for the model to answer.")


def _validate_settings(request: ChatRequest) -> None:
    if not isinstance(request.max_tokens, int) or request.max_tokens <= 0:
        raise RequestError(f"max_tokens must be a positive whole number, not {request.max_tokens!r}.")
    if request.kv_bits not in (None, 4, 8):
        raise RequestError(f"The KV cache can be quantized to 8 or 4 bits, not {request.kv_bits!r}.")
    if request.yarn_factor is not None and not (1.0 < request.yarn_factor <= MAX_YARN_FACTOR):
        raise RequestError(
            f"The YaRN factor must be above 1 and at most {MAX_YARN_FACTOR:g}, not {request.yarn_factor}."
        )
    validate_seed(request.seed)
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise RequestError(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.")
    for stop in request.stop:
        if not isinstance(stop, str) or not stop:
            raise RequestError("Stop sequences must be non-empty text.")
    if request.sampling is not None:
        resolve_sampling(request.sampling, thinking=False)  # validates, raising RequestError
    if request.reasoning_effort is not None and not isinstance(request.reasoning_effort, str):
        raise RequestError(f"The reasoning effort must be a name such as 'low', not {request.reasoning_effort!r}.")
    _validate_tools(request.tools)
    if request.preserve_thinking not in (None, True, False):
        raise RequestError(f"preserve_thinking must be true, false or unset, not {request.preserve_thinking!r}.")


def _validate_tools(tools: object) -> None:
    if not isinstance(tools, (tuple, list)):
        raise RequestError("tools must be a list of tool definitions.")
    for position, tool in enumerate(tools, start=1):
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            raise RequestError(f'Tool {position} has no function name (expected {{"type": "function", "function": {{"name": ...}}}}).')
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, Mapping):
            raise RequestError(f"Tool {name!r} has parameters that are not a JSON Schema object.")


class PromptRenderer:
    """Messages to prompt ids with the model's chat template, control tokens kept as text."""

    def __init__(self, tokenizer: Qwen3Tokenizer):
        self.tokenizer = tokenizer

    def thinking_for(self, request: ChatRequest) -> bool:
        """Will the model think in this request's turn (its settings and the model's switches)?"""
        if request.raw_prompt is not None:
            return False  # a text completion: no template, so no thinking switch either
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return resolve_thinking(
            last_user,
            request.enable_thinking,
            self.tokenizer.thinking_mode,
            soft_switches=self.tokenizer.soft_switches,
            default=self.tokenizer.thinks_by_default,
        )

    def prompt(self, request: ChatRequest, thinking: bool) -> list[int]:
        """The request's prompt ids, up to and including the generation prompt."""
        if request.raw_prompt is not None:
            return self.tokenizer.encode(request.raw_prompt)
        return self.render(
            request.messages,
            add_generation_prompt=True,
            thinking=thinking,
            reasoning_effort=request.reasoning_effort,
            preserve_thinking=request.preserve_thinking,
            tools=request.tools,
        )

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        add_generation_prompt: bool,
        thinking: bool,
        reasoning_effort: Optional[str] = None,
        preserve_thinking: Optional[bool] = None,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> list[int]:
        """Prompt ids of ``messages``; control tokens typed inside them stay plain text.

        Without sanitizing, a pasted "<|im_end|>\\n<|im_start|>system" would end the user's turn
        and open a fake system message. RequestError for a reasoning effort or preserve_thinking
        the template does not take.
        """
        return self.tokenizer.apply_chat_template(
            self._template_messages(messages, thinking),
            add_generation_prompt=add_generation_prompt,
            enable_thinking=thinking,
            tokenize=True,
            sanitize_control_tokens=True,
            reasoning_effort=reasoning_effort,
            preserve_thinking=preserve_thinking,
            tools=list(tools) or None,
        )

    def generation_prompt_opens_think(self, prompt: list[int]) -> bool:
        """Does the generation prompt (the ids from the last <|im_start|>) leave <think> open?

        Looking only at the template's last turn keeps a literal "<think>" in a message from
        fooling us (sanitized, it is not even a control id).
        """
        start = _last_index(prompt, self.tokenizer.token_to_id(_TURN_START))
        tail = prompt[start:] if start is not None else prompt
        return ends_inside_thinking(self.tokenizer.decode(tail))

    def history_tokens(self, prepared: PreparedRequest, reply: str) -> Optional[list[int]]:
        """Token ids of the conversation up to the next user turn, with ``reply`` as the answer.

        ``reply`` carries its reasoning (``reply_with_reasoning``), so a template that keeps it
        (Qwen3.8 by default, Qwen3.6 with preserve_thinking) renders it back, and one that drops
        it for earlier turns (Qwen3.5) does not, exactly as the next turn's prompt will.
        """
        request = prepared.request
        messages = [*request.messages, ChatMessage("assistant", reply), ChatMessage("user", _NEXT_TURN_MARKER)]
        ids = self.render(
            messages,
            add_generation_prompt=False,
            thinking=prepared.thinking,
            reasoning_effort=request.reasoning_effort,
            preserve_thinking=request.preserve_thinking,
            tools=request.tools,
        )
        # Rendered and encoded exactly as the next prompt will be, up to the turn that stands in
        # for the next message. <|im_start|> is a special token (typed ones are sanitized into
        # text), so the ids before its last occurrence are the same at the head of that prompt.
        cut = _last_index(ids, self.tokenizer.token_to_id(_TURN_START))
        if not cut or not self.tokenizer.decode(ids[cut:]).startswith(f"{_TURN_START}user\n{_NEXT_TURN_MARKER}"):
            return None
        return ids[:cut]

    def _template_messages(self, messages: Sequence[ChatMessage], thinking: bool) -> list[dict[str, str]]:
        """The messages as the template gets them, with earlier replies' reasoning split off.

        Qwen3's thinking templates split an assistant message at its </think> and strip newlines
        around it. Sanitizing wraps the tags in markers that those strips stop at, so where the
        template splits we hand it the split already, as ``reasoning_content``; templates that
        read ``reasoning_content`` but never split (Qwen3.8) get it the same way. Otherwise the
        unsanitized renderings of both forms are compared: a template that does neither
        (Instruct-2507) keeps the message as is, its tags then shown as text.
        """
        plain = [_template_message(message) for message in messages]
        split = [_split_reasoning(message) if message["role"] == "assistant" else message for message in plain]
        if split == plain or "reasoning_content" in self.tokenizer.chat_template.source:
            return split

        def render(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.chat_template.render(messages, add_generation_prompt=False, enable_thinking=thinking)

        if render(plain) == render(split):
            return split
        return plain


def _last_index(ids: Sequence[int], token_id: Optional[int]) -> Optional[int]:
    if token_id is None:
        return None
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] == token_id:
            return position
    return None


def _template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it (tool calls in the OpenAI shape they all expect)."""
    entry: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        entry["tool_calls"] = [
            {"type": "function", "function": {"name": call.name, "arguments": dict(call.arguments)}}
            for call in message.tool_calls
        ]
    return entry


def _split_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant message split at </think> exactly as Qwen3's thinking templates split it."""
    content = message["content"]
    if THINK_CLOSE not in content:
        return message
    reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    answer = content.split(THINK_CLOSE)[-1].lstrip("\n")
    return {**message, "content": answer, "reasoning_content": reasoning}
