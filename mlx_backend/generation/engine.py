"""The generation engine: one loaded model, one request at a time, a stream of events.

``Engine.stream(request, cancel)`` renders the chat with the model's own template (control
tokens typed inside messages, like a pasted ``<|im_end|>``, are encoded as plain text), reuses the
conversation's KV cache for the prompt prefix it already holds, prefills the rest in chunks
(reporting progress and honouring ``cancel`` between chunks), then samples with mlx-lm's
``generate_step`` and streams text split into thinking and answer.

Contract with the caller (the GUI worker, the CLI):

- A malformed request (no messages, unknown role, empty last message, last message not from
  the user, bad limits or sampling settings) or one that does not fit the context raises
  ``RequestError`` / ``ContextOverflowError`` from ``stream()`` itself, before any event: nothing
  was computed and the message is fit to show as is.
- Otherwise events arrive in this order: ``PrefillProgress`` (0/total first, total/total when the
  first token is out), then ``ThinkingDelta`` / ``AnswerDelta``, then exactly one ``Finished``.
  If generation itself breaks (e.g. MLX runs out of memory) a ``Failed`` comes first and the
  ``Finished`` has reason ``"error"``.
- ``cancel`` is checked after every prefill chunk and every token. A cancelled request ends
  with ``Finished("cancelled")``; the conversation's cache keeps exactly the tokens it
  processed, so the next request is both correct and cheap.
- After ``Finished`` of a request with a ``conversation_id`` the generator does one more thing
  before it ends: it re-encodes the reply the way the next turn's prompt will render it (see
  ``_reencode_reply``), so the next turn only prefills the new message. A caller that stops
  iterating at ``Finished`` (or sets ``cancel``) skips it; the cache stays consistent either way.
- One request at a time: a second ``stream`` while one runs raises RequestError on first use.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generate_step, generation_stream
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from mlx_backend.text.chat_template import THINK_CLOSE, THINK_OPEN
from mlx_backend.errors import ContextOverflowError, RequestError
from mlx_backend.events import (
    AnswerDelta,
    ChatMessage,
    ChatRequest,
    Event,
    Failed,
    Finished,
    FinishReason,
    GenerationStats,
    PrefillProgress,
    ROLES,
    SamplingParams,
)
from mlx_backend.memory.device import memory_budget, peak_memory_bytes, reset_peak_memory, wired_limit
from mlx_backend.memory.sizes import GB, model_nbytes
from mlx_backend.models import current_rope_scaling, set_rope_scaling
from mlx_backend.models.limits import (
    DEFAULT_YARN_FACTOR,
    KV_GROUP_SIZE,
    MAX_YARN_FACTOR,
    context_window,
    kv_quantizable,
    yarn_original_context,
)
from mlx_backend.generation.prompt_cache import PromptCacheStore, common_prefix_length
from mlx_backend.generation.sampling import (
    make_request_logits_processors,
    make_request_sampler,
    resolve_sampling,
    seed_random,
)
from mlx_backend.text.thinking import ThinkingParser, ends_inside_thinking, resolve_thinking

# mlx-lm's default: big enough to keep the matrix units busy, small enough to bound activations.
DEFAULT_PREFILL_STEP_SIZE = 2048
# A prompt must leave this much of the context free for the answer (or max_tokens, if smaller).
ANSWER_ROOM_TOKENS = 512
MAX_STOP_SEQUENCES = 16
# Stands in for the next user message when rendering how this reply will look in history.
_NEXT_TURN_MARKER = "\x00qwen-desk-next-turn\x00"
_TURN_START = "<|im_start|>"


@dataclass(frozen=True)
class EngineInfo:
    """What the UI shows about the loaded model."""

    name: str
    model_type: str
    context_length: int  # without YaRN
    # With YaRN at factor 4, Qwen3's documented long-context setting; None where Qwen publishes
    # no YaRN recipe (2507 models, which are long-context natively).
    yarn_context_length: Optional[int]
    thinking_mode: str  # "hybrid", "always" or "never"
    weights_bytes: int
    num_layers: int
    quantization_bits: Optional[int]
    path: Optional[Path] = None

    @property
    def weights_gb(self) -> float:
        return self.weights_bytes / GB


class _PrefillPaused(Exception):
    """Raised from generate_step's progress callback to hand control back after a chunk."""


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


@dataclass
class _Run:
    """Book-keeping of one request: what the KV cache holds and what was produced."""

    layers: list[Any]
    held: list[int]  # token ids the layer caches hold, position by position
    reused: int
    started: float = field(default_factory=time.perf_counter)
    prefilled: int = 0
    first_token_at: Optional[float] = None
    last_token_at: Optional[float] = None
    generated: int = 0
    broken: bool = False  # the cache may not match ``held``: never store it


class StopSequences:
    """Find stop strings in streamed text, holding back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stops)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to show now, and whether a stop string was reached (text before it only)."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        hits = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        hold = max(_partial_suffix(buffer, stop) for stop in self._stops)
        self._pending = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text


def _partial_suffix(text: str, stop: str) -> int:
    for length in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:length]):
            return length
    return 0


class Engine:
    """Owns one loaded model and its per-conversation prompt caches; not re-entrant."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        name: Optional[str] = None,
        prefill_step_size: int = DEFAULT_PREFILL_STEP_SIZE,
        cache_budget_bytes: Optional[int] = None,
        max_cached_conversations: int = 4,
        answer_room_tokens: int = ANSWER_ROOM_TOKENS,
        reencode_replies: bool = True,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.prefill_step_size = prefill_step_size
        self.answer_room_tokens = answer_room_tokens
        # After a reply, cache it as the next prompt will render it (see _reencode_reply).
        self.reencode_replies = reencode_replies
        self._load_info = getattr(model, "load_info", None)
        self._weights_bytes = (
            self._load_info.weights_bytes if self._load_info else model_nbytes(model)
        )
        self._name = name or (self._load_info.path.name if self._load_info else "model")
        self._base_rope = current_rope_scaling(model)
        self._active_rope = self._base_rope
        if cache_budget_bytes is None:
            cache_budget_bytes = self._default_cache_budget()
        self.prompt_caches = PromptCacheStore(cache_budget_bytes, max_cached_conversations)
        self._busy = threading.Lock()

    @classmethod
    def load(
        cls,
        path_or_repo: str | Path,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Optional[threading.Event] = None,
        **options: Any,
    ) -> "Engine":
        """Resolve (downloading if needed) and load a model folder or Hugging Face repo."""
        from mlx_backend.loading.loader import load

        model, tokenizer = load(path_or_repo, progress=progress, cancel=cancel)
        return cls(model, tokenizer, **options)

    # ------------------------------------------------------------------ facts

    @property
    def args(self) -> Any:
        return self.model.args

    @property
    def info(self) -> EngineInfo:
        quantization = self._load_info.quantization if self._load_info else None
        return EngineInfo(
            name=self._name,
            model_type=self.args.model_type,
            context_length=self.context_length(),
            yarn_context_length=(
                self.context_length(DEFAULT_YARN_FACTOR)
                if self.tokenizer.thinking_mode == "hybrid"
                else None
            ),
            thinking_mode=self.tokenizer.thinking_mode,
            weights_bytes=self._weights_bytes,
            num_layers=len(self.model.layers),
            quantization_bits=quantization["bits"] if quantization else None,
            path=self._load_info.path if self._load_info else None,
        )

    def context_length(self, yarn_factor: Optional[float] = None) -> int:
        """Tokens the model can attend over, natively or with YaRN at ``yarn_factor``."""
        return context_window(self.args.max_position_embeddings, self._base_rope, yarn_factor)

    def _yarn_original_context(self) -> int:
        return yarn_original_context(self.args.max_position_embeddings, self._base_rope)

    def _default_cache_budget(self) -> int:
        # A quarter of what the weights leave free, within [256 MiB, 4 GiB]: enough for a few
        # long chats without competing with the active request's own KV cache.
        free = memory_budget().bytes - self._weights_bytes
        return int(min(4 * 2**30, max(256 * 2**20, free // 4)))

    # ------------------------------------------------------------------ caches

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop a conversation's cache (deleted chat, edited history)."""
        self.prompt_caches.discard(conversation_id)

    def clear_caches(self) -> None:
        self.prompt_caches.clear()

    # ------------------------------------------------------------------ generation

    def stream(
        self, request: ChatRequest, cancel: Optional[threading.Event] = None
    ) -> Iterator[Event]:
        """Validate and render ``request`` now (raising RequestError), then stream its events."""
        prepared = self.prepare(request)
        return self._generate(prepared, cancel or threading.Event())

    def prepare(self, request: ChatRequest) -> PreparedRequest:
        """Check the request and render its prompt; raises RequestError/ContextOverflowError."""
        _validate_request(request)
        last_user = request.messages[-1].content
        thinking = resolve_thinking(last_user, request.enable_thinking, self.tokenizer.thinking_mode)
        sampling = resolve_sampling(request.sampling, thinking)
        prompt = self._render(request.messages, add_generation_prompt=True, thinking=thinking)
        context = self.context_length(request.yarn_factor)
        self._check_fits(len(prompt), request, context)
        if request.kv_bits is not None and not kv_quantizable(self.args.head_dim):
            raise RequestError(
                f"This model's attention heads have {self.args.head_dim} values, which can't be "
                f"quantized in groups of {KV_GROUP_SIZE}: turn KV cache quantization off."
            )
        return PreparedRequest(
            request=request,
            prompt=prompt,
            thinking=thinking,
            starts_inside_thinking=self._generation_prompt_opens_think(prompt),
            sampling=sampling,
            max_tokens=min(request.max_tokens, context - len(prompt)),
            rope_scaling=self._rope_for(request.yarn_factor),
        )

    def _check_fits(self, prompt_tokens: int, request: ChatRequest, context: int) -> None:
        # A small context (a test model) can't keep 512 tokens free; a quarter of it will do.
        room = min(request.max_tokens, self.answer_room_tokens, context // 4)
        if prompt_tokens + room <= context:
            return
        hint = "Start a new chat or shorten the messages or documents"
        if self._yarn_would_fit(prompt_tokens, request):
            hint += f", or turn on long context (YaRN) for up to {self.context_length(DEFAULT_YARN_FACTOR):,} tokens"
        raise ContextOverflowError(
            f"This conversation is {prompt_tokens:,} tokens long, but {self._name} can attend "
            f"over {context:,} tokens and {room:,} of them must stay free for the answer. "
            f"Nothing was cut off. {hint}."
        )

    def _yarn_would_fit(self, prompt_tokens: int, request: ChatRequest) -> bool:
        """Would turning YaRN on make this prompt fit? Not if it is on already (by the request or
        the model's config), not for 2507 models (no published YaRN recipe), not if still too long."""
        if request.yarn_factor is not None or self.tokenizer.thinking_mode != "hybrid":
            return False
        if self._base_rope and self._base_rope.get("rope_type") == "yarn":
            return False
        context = self.context_length(DEFAULT_YARN_FACTOR)
        room = min(request.max_tokens, self.answer_room_tokens, context // 4)
        return prompt_tokens + room <= context

    def _render(self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool, thinking: bool) -> list[int]:
        """Prompt ids of ``messages``; control tokens typed inside them stay plain text.

        Without sanitizing, a pasted "<|im_end|>\\n<|im_start|>system" would end the user's turn
        and open a fake system message.
        """
        return self.tokenizer.apply_chat_template(
            self._template_messages(messages, thinking),
            add_generation_prompt=add_generation_prompt,
            enable_thinking=thinking,
            tokenize=True,
            sanitize_control_tokens=True,
        )

    def _template_messages(self, messages: Sequence[ChatMessage], thinking: bool) -> list[dict[str, str]]:
        """The messages as the template gets them, with earlier replies' reasoning split off.

        Qwen3's thinking templates split an assistant message at its </think> and strip newlines
        around it. Sanitizing wraps the tags in markers that those strips stop at, so where the
        template splits we hand it the split already, as ``reasoning_content``. The unsanitized
        renderings of both forms are compared first: a template that does not split (Instruct-
        2507) keeps the message as is, its tags then shown as text.
        """
        plain = [{"role": message.role, "content": message.content} for message in messages]
        split = [_split_reasoning(message) if message["role"] == "assistant" else message for message in plain]
        if split == plain:
            return plain
        def render(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.chat_template.render(messages, add_generation_prompt=False, enable_thinking=thinking)

        if render(plain) == render(split):
            return split
        return plain

    def _generation_prompt_opens_think(self, prompt: list[int]) -> bool:
        """Does the generation prompt (the ids from the last <|im_start|>) leave <think> open?

        Looking only at the template's last turn keeps a literal "<think>" in a message from
        fooling us (sanitized, it is not even a control id).
        """
        start = _last_index(prompt, self.tokenizer.token_to_id(_TURN_START))
        tail = prompt[start:] if start is not None else prompt
        return ends_inside_thinking(self.tokenizer.decode(tail))

    def _rope_for(self, yarn_factor: Optional[float]) -> Optional[dict[str, Any]]:
        if yarn_factor is None:
            return self._base_rope
        return {
            "rope_type": "yarn",
            "factor": float(yarn_factor),
            "original_max_position_embeddings": self._yarn_original_context(),
        }

    def _use_rope(self, rope_scaling: Optional[dict[str, Any]]) -> None:
        if rope_scaling == self._active_rope:
            return
        set_rope_scaling(self.model, rope_scaling)
        self._active_rope = rope_scaling
        # Cached keys were rotated with the old positions' angles: none of them is valid now.
        self.prompt_caches.clear()

    def _generate(self, prepared: PreparedRequest, cancel: threading.Event) -> Iterator[Event]:
        if not self._busy.acquire(blocking=False):
            raise RequestError("The model is still answering another request; wait or cancel it.")
        run: Optional[_Run] = None
        try:
            reset_peak_memory()
            self._use_rope(prepared.rope_scaling)
            seed_random(prepared.request.seed)
            run = self._checkout_cache(prepared)
            with wired_limit((generation_stream,)):
                yield from self._events(prepared, run, cancel)
        except GeneratorExit:
            raise  # the caller stopped listening at an event: the cache is consistent
        except BaseException:
            # Interrupted inside a model call (Ctrl-C): some layers may hold a partial chunk.
            if run is not None:
                run.broken = True
            raise
        finally:
            if run is not None:
                self._return_cache(prepared, run)
            self._busy.release()

    def _signature(self, request: ChatRequest) -> tuple:
        """What cached keys/values depend on besides the tokens: KV bits and the rope."""
        return (request.kv_bits, repr(sorted((self._active_rope or {}).items())))

    def _checkout_cache(self, prepared: PreparedRequest) -> _Run:
        request = prepared.request
        checkout = self.prompt_caches.checkout(
            request.conversation_id,
            prepared.prompt,
            lambda: make_prompt_cache(self.model),
            self._signature(request),
        )
        return _Run(
            layers=checkout.layers,
            held=prepared.prompt[: checkout.reused],
            reused=checkout.reused,
        )

    def _return_cache(self, prepared: PreparedRequest, run: _Run) -> None:
        conversation = prepared.request.conversation_id
        if not conversation or run.broken:
            return
        # Every layer must hold exactly the tokens we think it holds, or the cache is dropped.
        if all(layer.offset == len(run.held) for layer in run.layers):
            self.prompt_caches.put(
                conversation, run.layers, run.held, self._signature(prepared.request)
            )

    def _events(self, prepared: PreparedRequest, run: _Run, cancel: threading.Event) -> Iterator[Event]:
        total = len(prepared.prompt) - run.reused
        yield PrefillProgress(0, total, None)
        tokens = None
        try:
            # generate_step runs the whole prefill inside its first next(); to report progress
            # and honour cancel per chunk, its callback pauses it after every chunk but the last.
            # The cache keeps each finished chunk, and the next call resumes from there.
            while True:
                if cancel.is_set():
                    yield Finished("cancelled", self._stats(run, prepared))
                    return
                tokens = self._start_generation(prepared, run)
                try:
                    first = next(tokens)
                    break
                except _PrefillPaused:
                    tokens = None
                yield PrefillProgress(run.prefilled, total, self._eta(run, total))
            run.first_token_at = time.perf_counter()
            yield PrefillProgress(total, total, 0.0)
            reason, answer = yield from self._decode(prepared, run, tokens, first, cancel)
        except Exception as error:  # MLX errors (out of memory, ...) end the stream, not the app
            run.broken = True
            yield Failed(f"Generation failed: {error}")
            yield Finished("error", self._stats(run, prepared))
            return
        finally:
            if tokens is not None:
                tokens.close()
        yield Finished(reason, self._stats(run, prepared))
        if reason != "cancelled" and prepared.request.conversation_id and self.reencode_replies:
            try:
                self._reencode_reply(prepared, run, answer, cancel)
            except Exception:  # the answer is complete: a failure here only costs the cache
                run.broken = True

    def _start_generation(self, prepared: PreparedRequest, run: _Run) -> Iterator[tuple[int, Any]]:
        """generate_step over the prompt tokens the cache does not hold yet."""
        request = prepared.request
        segment_start = len(run.held)

        def on_progress(done: int, total: int) -> None:
            if done == 0 or done >= total:
                return
            # This chunk is evaluated and in the cache: account for it before pausing.
            run.held = prepared.prompt[: segment_start + done]
            run.prefilled = len(run.held) - run.reused
            if total - done > 1:  # more than the final token (which yields the first logits)
                raise _PrefillPaused

        return generate_step(
            mx.array(prepared.prompt[segment_start:]),
            self.model,
            max_tokens=prepared.max_tokens,
            sampler=make_request_sampler(prepared.sampling, self.args.vocab_size),
            logits_processors=make_request_logits_processors(prepared.sampling),
            prompt_cache=run.layers,
            prefill_step_size=self.prefill_step_size,
            kv_bits=request.kv_bits,
            kv_group_size=KV_GROUP_SIZE,
            # A requested KV quantization covers the whole context, as the memory plan assumes.
            quantized_kv_start=0,
            prompt_progress_callback=on_progress,
        )

    def _decode(
        self,
        prepared: PreparedRequest,
        run: _Run,
        tokens: Iterator[tuple[int, Any]],
        first: tuple[int, Any],
        cancel: threading.Event,
    ) -> Iterator[Event]:
        # From here the cache holds the whole prompt plus every token generate_step yielded
        # (it feeds a token to the model before yielding it).
        run.held = list(prepared.prompt)
        run.prefilled = len(prepared.prompt) - run.reused
        eos = self.tokenizer.eos_token_ids
        detokenizer = self.tokenizer.detokenizer()
        parser = ThinkingParser(prepared.starts_inside_thinking)
        stops = StopSequences(prepared.request.stop)
        reason: FinishReason = "length"
        answer: list[str] = []
        stopped_by_string = False

        def show(deltas: list[Event]) -> Iterator[Event]:
            for delta in deltas:
                if isinstance(delta, AnswerDelta):
                    answer.append(delta.text)
                yield delta

        item: Optional[tuple[int, Any]] = first
        while item is not None:
            token = item[0]
            run.held.append(token)
            run.generated += 1
            run.last_token_at = time.perf_counter()
            if token in eos:
                reason = "stop"
                break
            text, stopped_by_string = stops.feed(detokenizer.add_token(token))
            if text:
                yield from show(parser.feed(text))
            if stopped_by_string:
                reason = "stop"
                break
            if cancel.is_set():
                reason = "cancelled"
                break
            item = next(tokens, None)
        if not stopped_by_string:
            # Release what was held back: a partial character, a partial stop string.
            tail, hit = stops.feed(detokenizer.finalize())
            if not hit:
                tail += stops.flush()
            if tail:
                yield from show(parser.feed(tail))
        yield from show(parser.flush())
        return reason, "".join(answer)

    def _reencode_reply(
        self, prepared: PreparedRequest, run: _Run, answer: str, cancel: threading.Event
    ) -> None:
        """Make the cache hold this reply the way the next turn's prompt will show it.

        Qwen3's template renders an earlier reply without its <think> block (even the empty one
        of non-thinking mode), so the next prompt diverges from the cache right where this reply
        starts. Re-encoding the reply now, while the user reads it, takes that work off the next
        turn's time to first token. It is exactly the work the next turn would otherwise do, it
        stops between chunks on cancel, and a next prompt that differs anyway (an edited
        history) still reuses only what matches.
        """
        if cancel.is_set():
            return
        history = self._history_tokens(prepared, answer)
        if history is None:
            return
        keep = common_prefix_length(run.held, history)
        if keep == len(history):
            return
        if keep < len(run.held):
            if not can_trim_prompt_cache(run.layers):
                return
            trim_prompt_cache(run.layers, len(run.held) - keep)
            run.held = run.held[:keep]
        rest = history[keep:]
        step = self.prefill_step_size
        with mx.stream(generation_stream):
            for start in range(0, len(rest), step):
                if cancel.is_set():
                    return
                chunk = rest[start : start + step]
                # Only the keys and values are evaluated; the logits are never computed.
                self.model(mx.array(chunk)[None], cache=run.layers)
                mx.eval([layer.state for layer in run.layers])
                run.held.extend(chunk)

    def _history_tokens(self, prepared: PreparedRequest, answer: str) -> Optional[list[int]]:
        """Token ids of the conversation up to the next user turn, with ``answer`` as a reply."""
        messages = [
            *prepared.request.messages,
            ChatMessage("assistant", answer),
            ChatMessage("user", _NEXT_TURN_MARKER),
        ]
        ids = self._render(messages, add_generation_prompt=False, thinking=prepared.thinking)
        # Rendered and encoded exactly as the next prompt will be, up to the turn that stands in
        # for the next message. <|im_start|> is a special token (typed ones are sanitized into
        # text), so the ids before its last occurrence are the same at the head of that prompt.
        cut = _last_index(ids, self.tokenizer.token_to_id(_TURN_START))
        if not cut or not self.tokenizer.decode(ids[cut:]).startswith(f"{_TURN_START}user\n{_NEXT_TURN_MARKER}"):
            return None
        return ids[:cut]

    @staticmethod
    def _eta(run: _Run, total: int) -> Optional[float]:
        if run.prefilled <= 0:
            return None
        elapsed = time.perf_counter() - run.started
        return elapsed / run.prefilled * (total - run.prefilled)

    def _stats(self, run: _Run, prepared: PreparedRequest) -> GenerationStats:
        prefill_end = run.first_token_at or time.perf_counter()
        prefill_time = max(prefill_end - run.started, 1e-9)
        decode_time = (run.last_token_at or prefill_end) - prefill_end
        return GenerationStats(
            prompt_tokens=len(prepared.prompt),
            cached_tokens=run.reused,
            generation_tokens=run.generated,
            ttft_s=(run.first_token_at - run.started) if run.first_token_at else 0.0,
            prompt_tps=run.prefilled / prefill_time,
            # Tokens after the first over the time they took (the first belongs to prefill).
            generation_tps=(run.generated - 1) / decode_time if run.generated > 1 and decode_time > 0 else 0.0,
            peak_memory_gb=peak_memory_bytes() / GB,
        )


def _last_index(ids: Sequence[int], token_id: Optional[int]) -> Optional[int]:
    if token_id is None:
        return None
    for position in range(len(ids) - 1, -1, -1):
        if ids[position] == token_id:
            return position
    return None


def _split_reasoning(message: dict[str, str]) -> dict[str, str]:
    """An assistant message split at </think> exactly as Qwen3's thinking templates split it."""
    content = message["content"]
    if THINK_CLOSE not in content:
        return message
    reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
    answer = content.split(THINK_CLOSE)[-1].lstrip("\n")
    return {"role": "assistant", "content": answer, "reasoning_content": reasoning}


def _validate_request(request: ChatRequest) -> None:
    messages = request.messages
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
    last = messages[-1]
    if last.role != "user":
        raise RequestError(
            f"The last message must be the user's (it is from the {last.role}): the model answers a user message."
        )
    if not last.content.strip():
        raise RequestError("The last message is empty: write something for the model to answer.")
    if not isinstance(request.max_tokens, int) or request.max_tokens <= 0:
        raise RequestError(f"max_tokens must be a positive whole number, not {request.max_tokens!r}.")
    if request.kv_bits not in (None, 4, 8):
        raise RequestError(f"The KV cache can be quantized to 8 or 4 bits, not {request.kv_bits!r}.")
    if request.yarn_factor is not None and not (1.0 < request.yarn_factor <= MAX_YARN_FACTOR):
        raise RequestError(
            f"The YaRN factor must be above 1 and at most {MAX_YARN_FACTOR:g}, not {request.yarn_factor}."
        )
    if request.seed is not None and (not isinstance(request.seed, int) or request.seed < 0):
        raise RequestError(f"The seed must be a whole number, 0 or more, not {request.seed!r}.")
    if len(request.stop) > MAX_STOP_SEQUENCES:
        raise RequestError(f"At most {MAX_STOP_SEQUENCES} stop sequences are allowed.")
    for stop in request.stop:
        if not isinstance(stop, str) or not stop:
            raise RequestError("Stop sequences must be non-empty text.")
    if request.sampling is not None:
        resolve_sampling(request.sampling, thinking=False)  # validates, raising RequestError
