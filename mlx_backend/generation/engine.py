"""The generation engine: one loaded model, one request at a time, a stream of events.

``Engine.stream(request, cancel)`` renders the chat with the model's own template (control
tokens typed inside messages, like a pasted ``<|im_end|>``, are encoded as plain text), reuses the
conversation's KV cache for the prompt prefix it already holds, prefills the rest itself in
chunks sized by time (``prefill.py``), then samples with mlx-lm's ``generate_step`` from the
filled cache and streams text split into thinking and answer.

A hybrid model's cache (Qwen3.5, Qwen3-Next: linear-attention layers whose recurrent state
can't be trimmed) is reused the same way through snapshots of the linear layers' state at turn
boundaries: before the last user message and before the generation prompt (chunks end there),
and at the end of each re-encoded reply. A next prompt resumes from the live state when the
cache's tokens are a prefix of it, else from the longest snapshot inside the common prefix
(``prompt_cache.py``), so a follow-up turn prefills only the new message and the generation
prompt, and an edited or regenerated turn only what follows the last boundary before it.

Speculative decoding (``speculative.py``): with ``draft_model=`` (a small model of the same
tokenizer, ``Engine.load(..., draft=path)``) the draft guesses and this model verifies several
tokens per pass; without one, the checkpoint's own multi-token-prediction layer drafts where it
has one (``Engine.load(..., mtp=True)``, ``ChatRequest.use_mtp``; Qwen3.5 family, Qwen3-Next:
``models/mtp.py``, its cache filled over the prompt during prefill); otherwise long prompts (``ChatRequest.prompt_lookup``, "auto") draft by
n-gram lookup in the prompt. Output is the target's own (greedy: token-identical), the draft's
cache is kept per conversation beside the target's, and drafting that doesn't pay falls back to
plain decoding during the answer. Hybrid models (Qwen3.5, Qwen3-Next) speculate too: their
linear layers are snapshotted before each verify pass and restored when drafts are rejected.

Contract with the caller (the GUI worker, the CLI):

- A malformed request (no messages, unknown role, empty last message, last message not from
  the user, bad limits or sampling settings) or one that does not fit the context raises
  ``RequestError`` / ``ContextOverflowError`` from ``stream()`` itself, before any event: nothing
  was computed and the message is fit to show as is.
- Otherwise events arrive in this order: ``PrefillProgress`` (0/total first, one after every
  prefill chunk with an ETA, total/total when the first token is out), then ``ThinkingDelta`` /
  ``AnswerDelta``, then exactly one ``Finished``. If generation itself breaks (e.g. MLX runs out
  of memory) a ``Failed`` comes first and the ``Finished`` has reason ``"error"``.
- ``cancel`` is checked after every prefill chunk (about a quarter of a second each) and every
  token. A cancelled request ends with ``Finished("cancelled")``; the conversation's cache keeps
  exactly the tokens it processed, so the next request is both correct and cheap.
- After ``Finished`` of a request with a ``conversation_id`` the generator does one more thing
  before it ends: it re-encodes the reply the way the next turn's prompt will render it, with the
  same prefill loop (see ``_reencode_reply``), so the next turn only prefills the new message. A
  caller that stops iterating at ``Finished`` (or sets ``cancel``) skips it; the cache stays
  consistent either way.
- One request at a time: a second ``stream`` while one runs raises RequestError on first use.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generate_step, generation_stream
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.sample_utils import Sampler

from mlx_backend.distributed.group import GroupCancel, RankGroup, leader_sampler
from mlx_backend.errors import ContextOverflowError, RequestError
from mlx_backend.events import ChatRequest, Event, Failed, Finished, PrefillProgress, SamplingParams
from mlx_backend.generation.decode import TokenStep, decode_reply
from mlx_backend.generation.disk_cache import DEFAULT_DISK_BUDGET_BYTES, DiskPromptCache, model_identity
from mlx_backend.generation.prefill import PrefillChunk, PrefillPolicy, prefill
from mlx_backend.generation.prompt_cache import (
    PromptCacheStore,
    common_prefix_length,
    is_restorable,
    rewind,
)
from mlx_backend.generation.request import PreparedRequest, PromptRenderer, validate_request
from mlx_backend.generation.sampling import (
    make_request_logits_processors,
    make_request_sampler,
    resolve_sampling,
    seed_random,
)
from mlx_backend.generation.speculative import (
    DraftModelDrafter,
    Drafter,
    MtpDrafter,
    MtpPrefill,
    PromptLookupDrafter,
    SpeculationStats,
    can_speculate,
    speculative_steps,
)
from mlx_backend.generation.stats import RequestRun
from mlx_backend.memory.device import memory_budget, reset_peak_memory, wired_limit
from mlx_backend.memory.sizes import GB, model_nbytes
from mlx_backend.models import current_rope_scaling, set_rope_scaling
from mlx_backend.models.mtp import body_of, forward_with_hidden
from mlx_backend.models.shape import ModelShape, shape_of
from mlx_backend.models.limits import (
    KV_GROUP_SIZE,
    YarnRecipe,
    context_window,
    kv_quantizable,
    no_recipe_message,
    yarn_recipe,
)
from mlx_backend.text.tokenizer import Qwen3Tokenizer

log = logging.getLogger(__name__)

# A prompt must leave this much of the context free for the answer (or max_tokens, if smaller).
ANSWER_ROOM_TOKENS = 512
# Prompt lookup "auto" tries drafting from prompts at least this long (documents, pastes).
PROMPT_LOOKUP_MIN_TOKENS = 512
PROMPT_LOOKUP_MODES = ("auto", "on", "off")
# Prefill chunk in a group of ranks (see Engine.__init__).
GROUP_PREFILL_CHUNK_TOKENS = 512


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
    # Reasoning-effort levels the chat template takes (empty: it takes none), default first.
    reasoning_efforts: tuple[str, ...] = ()
    # Does the template offer to keep earlier turns' reasoning (preserve_thinking)?
    can_preserve_thinking: bool = False
    # Where it can: does the template keep earlier reasoning when the request leaves it unset?
    preserves_thinking_by_default: bool = False
    # A hybrid model's default when the request leaves thinking unset (Qwen3.5-0.8B: off).
    thinks_by_default: bool = True
    # Is the checkpoint's multi-token-prediction layer loaded (drafts when no draft model is)?
    has_mtp: bool = False

    @property
    def weights_gb(self) -> float:
        return self.weights_bytes / GB


class Engine:
    """Owns one loaded model and its per-conversation prompt caches; not re-entrant."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Qwen3Tokenizer,
        *,
        name: Optional[str] = None,
        prefill: PrefillPolicy = PrefillPolicy(),
        cache_budget_bytes: Optional[int] = None,
        max_cached_conversations: int = 4,
        answer_room_tokens: int = ANSWER_ROOM_TOKENS,
        reencode_replies: bool = True,
        disk_cache_folder: Optional[str | Path] = None,
        disk_cache_budget_bytes: int = DEFAULT_DISK_BUDGET_BYTES,
        draft_model: Optional[nn.Module] = None,
        draft_tokenizer: Optional[Qwen3Tokenizer] = None,
        num_draft_tokens: Optional[int] = None,
        prompt_lookup_min_tokens: int = PROMPT_LOOKUP_MIN_TOKENS,
        group: Optional[RankGroup] = None,
        mtp: Optional[nn.Module] = None,
    ):
        self.model = model
        # Several processes running this model together (mlx.launch): rank 0 samples and
        # decides when to stop for all of them (distributed/group.py). None: this process alone.
        self.group = group or RankGroup(None)
        self.tokenizer = tokenizer
        self.prefill_policy = prefill
        self.answer_room_tokens = answer_room_tokens
        # After a reply, cache it as the next prompt will render it (see _reencode_reply).
        self.reencode_replies = reencode_replies
        self._renderer = PromptRenderer(tokenizer)
        self._load_info = getattr(model, "load_info", None)
        self._weights_bytes = (
            self._load_info.weights_bytes if self._load_info else model_nbytes(model)
        )
        self._name = name or (self._load_info.path.name if self._load_info else "model")
        self._shape = shape_of(model)
        self._base_rope = current_rope_scaling(model)
        self._active_rope = self._base_rope
        if cache_budget_bytes is None:
            cache_budget_bytes = self._default_cache_budget()
        if self.group.is_distributed:
            # Every prefill chunk ends with a cancel check, a collective: all ranks must cut the
            # same chunks and reuse the same cached prefix. So chunks are fixed (not timed per
            # rank) and caches are kept by count, not by each rank's own bytes and budget.
            if prefill.min_chunk_tokens != prefill.max_chunk_tokens:
                prefill = PrefillPolicy.fixed(GROUP_PREFILL_CHUNK_TOKENS)
                self.prefill_policy = prefill
            cache_budget_bytes = 2**62
        self.prompt_caches = PromptCacheStore(cache_budget_bytes, max_cached_conversations)
        # Conversations' caches on disk, so a chat reopened after a restart isn't prefilled again.
        self.disk_cache: Optional[DiskPromptCache] = None
        if disk_cache_folder is not None and not self.group.is_distributed:
            self.disk_cache = DiskPromptCache(
                disk_cache_folder, self._identity(), self._shape, disk_cache_budget_bytes
            )
        # Speculative decoding: a small model of the same tokenizer drafts, this one verifies.
        # None drafts an automatic number of tokens (following the acceptance).
        self.num_draft_tokens = num_draft_tokens
        self.prompt_lookup_min_tokens = prompt_lookup_min_tokens
        # Drafting decides per rank how many tokens to verify: not in a group.
        self._speculates = can_speculate(make_prompt_cache(model)) and not self.group.is_distributed
        self.draft_model = draft_model
        self._draft_caches: Optional[PromptCacheStore] = None
        # The checkpoint's multi-token-prediction layer (models/mtp.py), a drafter without a
        # draft model; used when no draft model is chosen and the request wants it.
        self.mtp = mtp if self._speculates else None
        if draft_model is not None:
            self._check_draft(draft_model, draft_tokenizer)
            self._draft_caches = PromptCacheStore(
                max(64 * 2**20, cache_budget_bytes // 4), max_cached_conversations
            )
        self._busy = threading.Lock()

    def _check_draft(self, draft_model: nn.Module, draft_tokenizer: Optional[Qwen3Tokenizer]) -> None:
        """Refuse a draft model the engine can't use, with the reason (raises RequestError)."""
        num = self.num_draft_tokens
        if num is not None:
            if not isinstance(num, int) or not 1 <= num <= 32:
                raise RequestError(f"The number of drafted tokens must be 1 to 32, not {num!r}.")
        if not self._speculates or not can_speculate(make_prompt_cache(draft_model)):
            raise RequestError(
                "Speculative decoding needs both models' caches to be trimmable or snapshotted "
                "(KV caches, or the linear-attention state of Qwen3.5 / Qwen3-Next); one of these "
                "models keeps a state that can't be taken back: load it without a draft model."
            )
        if draft_tokenizer is not None and not _same_tokenizer(self.tokenizer, draft_tokenizer):
            raise RequestError(
                "The draft model must use the same tokenizer as the model it drafts for "
                "(e.g. Qwen3-0.6B for a larger Qwen3)."
            )

    def _identity(self) -> str:
        """What a cache file must have been made with to be used: these weights and template."""
        weights = []
        if self._load_info is not None:
            for file in sorted(self._load_info.path.glob("*.safetensors")):
                stat = file.stat()
                weights.append((file.name, stat.st_size, stat.st_mtime_ns))
        return model_identity(
            str(self._load_info.path) if self._load_info else self._name,
            self._load_info.config if self._load_info else None,
            weights,
            self.tokenizer.chat_template.source,
            self._weights_bytes,
            importlib.metadata.version("mlx-lm"),
        )

    @classmethod
    def load(
        cls,
        path_or_repo: str | Path,
        progress: Optional[Callable[[int, int], None]] = None,
        cancel: Optional[threading.Event] = None,
        draft: Optional[str | Path] = None,
        mtp: bool = True,
        pipeline: bool = False,
        **options: Any,
    ) -> "Engine":
        """Resolve (downloading if needed) and load a model folder or Hugging Face repo, and
        ``draft``, a small model of the same tokenizer for speculative decoding, if given.
        ``mtp``: also load the checkpoint's multi-token-prediction layer where it has one.
        ``pipeline`` (with ``group=``): this rank loads and runs only its pipeline stage."""
        from mlx_backend.loading.loader import load
        from mlx_backend.models.mtp import load_mtp

        group = options.get("group")
        stage_of = group if pipeline and group is not None and group.is_distributed else None
        model, tokenizer = load(path_or_repo, progress=progress, cancel=cancel, stage_of=stage_of)
        if mtp and stage_of is None:  # a group doesn't draft
            options["mtp"] = load_mtp(model)
        if draft is not None:
            options["draft_model"], options["draft_tokenizer"] = load(draft, cancel=cancel)
        return cls(model, tokenizer, **options)

    # ------------------------------------------------------------------ facts

    @property
    def shape(self) -> ModelShape:
        """Layers, heads, vocabulary and positions of the loaded model."""
        return self._shape

    @property
    def info(self) -> EngineInfo:
        quantization = self._load_info.quantization if self._load_info else None
        return EngineInfo(
            name=self._name,
            model_type=self._shape.model_type,
            context_length=self.context_length(),
            yarn_context_length=self._yarn_recipe.window() if self._yarn_recipe else None,
            thinking_mode=self.tokenizer.thinking_mode,
            weights_bytes=self._weights_bytes,
            num_layers=self._shape.num_layers,
            quantization_bits=quantization["bits"] if quantization else None,
            path=self._load_info.path if self._load_info else None,
            reasoning_efforts=self.tokenizer.reasoning_efforts,
            can_preserve_thinking=self.tokenizer.can_preserve_thinking,
            preserves_thinking_by_default=self.tokenizer.preserves_thinking_by_default,
            thinks_by_default=self.tokenizer.thinks_by_default,
            has_mtp=self.mtp is not None,
        )

    def context_length(self, yarn_factor: Optional[float] = None) -> int:
        """Tokens the model can attend over, natively or with YaRN at ``yarn_factor``; raises
        RequestError for a factor where the model has no published YaRN recipe."""
        if yarn_factor is not None and self._yarn_recipe is None:
            raise RequestError(no_recipe_message(self._name))
        return context_window(
            self._shape.max_position_embeddings, self._base_rope, yarn_factor, self._yarn_recipe
        )

    @property
    def _yarn_recipe(self) -> Optional[YarnRecipe]:
        # By the model family's card (limits.yarn_recipe), or the config's own YaRN.
        return yarn_recipe(
            self._shape.model_type,
            self.tokenizer.thinking_mode,
            self._shape.max_position_embeddings,
            self._base_rope,
        )

    def _default_cache_budget(self) -> int:
        # A quarter of what the weights leave free, within [256 MiB, 4 GiB]: enough for a few
        # long chats without competing with the active request's own KV cache.
        free = memory_budget().bytes - self._weights_bytes
        return int(min(4 * 2**30, max(256 * 2**20, free // 4)))

    # ------------------------------------------------------------------ caches

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop a conversation's cache (deleted chat, edited history), on disk too."""
        self.prompt_caches.discard(conversation_id)
        if self._draft_caches is not None:
            self._draft_caches.discard(conversation_id)
        if self.disk_cache is not None:
            self.disk_cache.discard(conversation_id)

    def clear_caches(self) -> None:
        self.prompt_caches.clear()
        if self._draft_caches is not None:
            self._draft_caches.clear()

    # ------------------------------------------------------------------ requests

    def stream(
        self, request: ChatRequest, cancel: Optional[threading.Event] = None
    ) -> Iterator[Event]:
        """Validate and render ``request`` now (raising RequestError), then stream its events."""
        prepared = self.prepare(request)
        return self._generate(prepared, cancel or threading.Event())

    def prepare(self, request: ChatRequest) -> PreparedRequest:
        """Check the request and render its prompt; raises RequestError/ContextOverflowError."""
        validate_request(request)
        thinking = self._renderer.thinking_for(request)
        sampling = resolve_sampling(request.sampling, thinking)
        prompt = self._renderer.prompt(request, thinking)
        context = self.context_length(request.yarn_factor)
        self._check_fits(len(prompt), request, context)
        if request.kv_bits is not None and not kv_quantizable(self._shape.head_dim):
            raise RequestError(
                f"This model's attention heads have {self._shape.head_dim} values, which can't be "
                f"quantized in groups of {KV_GROUP_SIZE}: turn KV cache quantization off."
            )
        if request.prompt_lookup not in PROMPT_LOOKUP_MODES:
            raise RequestError(
                f"Prompt lookup must be one of {', '.join(PROMPT_LOOKUP_MODES)}, not {request.prompt_lookup!r}."
            )
        if request.prompt_lookup == "on" and not self._speculates:
            raise RequestError(
                "Prompt lookup needs a cache whose drafted tokens can be taken back; this model's "
                "can't be (or it runs on several machines), so it decodes plainly: set prompt "
                "lookup to auto or off."
            )
        return PreparedRequest(
            request=request,
            prompt=prompt,
            thinking=thinking,
            starts_inside_thinking=self._renderer.generation_prompt_opens_think(prompt),
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
            hint += f", or turn on long context (YaRN) for up to {self._yarn_recipe.window():,} tokens"
        raise ContextOverflowError(
            f"This conversation is {prompt_tokens:,} tokens long, but {self._name} can attend "
            f"over {context:,} tokens and {room:,} of them must stay free for the answer. "
            f"Nothing was cut off. {hint}."
        )

    def _yarn_would_fit(self, prompt_tokens: int, request: ChatRequest) -> bool:
        """Would turning YaRN on make this prompt fit? Not if it is on already (by the request or
        the model's config), not for 2507 models (no published YaRN recipe), not if still too long."""
        recipe = self._yarn_recipe
        if request.yarn_factor is not None or recipe is None or recipe.in_config:
            return False
        context = recipe.window()
        room = min(request.max_tokens, self.answer_room_tokens, context // 4)
        return prompt_tokens + room <= context

    def _rope_for(self, yarn_factor: Optional[float]) -> Optional[dict[str, Any]]:
        if yarn_factor is None:
            return self._base_rope
        return {
            "rope_type": "yarn",
            "factor": float(yarn_factor),
            "original_max_position_embeddings": self._yarn_recipe.original_context,
        }

    def _use_rope(self, rope_scaling: Optional[dict[str, Any]]) -> None:
        if rope_scaling == self._active_rope:
            return
        set_rope_scaling(self.model, rope_scaling)
        if self.mtp is not None:
            set_rope_scaling(self.mtp, rope_scaling)
        self._active_rope = rope_scaling
        # Cached keys were rotated with the old positions' angles: none of them is valid now.
        self.prompt_caches.clear()

    # ------------------------------------------------------------------ one run

    def _generate(self, prepared: PreparedRequest, cancel: threading.Event) -> Iterator[Event]:
        if not self._busy.acquire(blocking=False):
            raise RequestError("The model is still answering another request; wait or cancel it.")
        run: Optional[RequestRun] = None
        if self.group.is_distributed and not isinstance(cancel, GroupCancel):
            cancel = GroupCancel(self.group, cancel)  # every check is one collective on all ranks
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

    def _checkout_cache(self, prepared: PreparedRequest) -> RequestRun:
        request = prepared.request
        self._restore_from_disk(request)
        checkout = self.prompt_caches.checkout(
            request.conversation_id,
            prepared.prompt,
            lambda: make_prompt_cache(self.model),
            self._signature(request),
        )
        run = RequestRun(
            layers=checkout.layers,
            held=prepared.prompt[: checkout.reused],
            reused=checkout.reused,
            snapshots=checkout.snapshots,
        )
        if request.conversation_id and is_restorable(run.layers):
            run.want_snapshots_at(self._turn_boundaries(prepared.prompt))
        return run

    def _restore_from_disk(self, request: ChatRequest) -> None:
        """A conversation not in memory (first use since a restart) may have a cache on disk."""
        conversation = request.conversation_id
        if self.disk_cache is None or not conversation or conversation in self.prompt_caches:
            return
        signature = self._signature(request)
        entry = self.disk_cache.load(conversation, signature)
        if entry is not None:
            self.prompt_caches.put(conversation, entry.layers, entry.tokens, signature, entry.snapshots)

    def _turn_boundaries(self, prompt: list[int]) -> list[int]:
        """Where a re-rendered history may first differ from this prompt: before the generation
        prompt (a regenerated or edited reply) and before the last user message (an edited one).

        Those are the starts of the last two turns. <|im_start|> is a special token (typed ones
        are sanitized into text), so ``prompt[:p]`` is exactly the history rendered up to there.
        """
        start = self.tokenizer.token_to_id("<|im_start|>")
        return [i for i, token in enumerate(prompt) if token == start][-2:]

    def _return_cache(self, prepared: PreparedRequest, run: RequestRun) -> None:
        conversation = prepared.request.conversation_id
        if not conversation or run.broken:
            return
        # Every layer must hold exactly the tokens we think it holds, or the cache is dropped.
        self._return_draft_cache(prepared, run)
        if all(layer.offset == len(run.held) for layer in run.layers):
            signature = self._signature(prepared.request)
            self.prompt_caches.put(conversation, run.layers, run.held, signature, run.snapshots)
            entry = self.prompt_caches.peek(conversation)
            if self.disk_cache is not None and entry is not None:
                try:
                    self.disk_cache.save(conversation, entry, signature)
                except Exception:  # noqa: BLE001 - the disk copy is an optimisation only
                    log.warning("could not save the prompt cache", exc_info=True)

    def _return_draft_cache(self, prepared: PreparedRequest, run: RequestRun) -> None:
        """The draft model's cache goes back too, holding the tokens it was last fed."""
        drafter = run.drafter
        if self._draft_caches is None or not isinstance(drafter, DraftModelDrafter):
            return
        drafter.settle()  # a hybrid draft's unchecked guesses can't be trimmed later
        if drafter.held and all(layer.offset == len(drafter.held) for layer in drafter.layers):
            signature = self._signature(prepared.request)
            marks = {p: s for p, s in drafter.marks.items() if p <= len(drafter.held)}
            self._draft_caches.put(
                prepared.request.conversation_id, drafter.layers, drafter.held, signature, marks
            )

    def _events(self, prepared: PreparedRequest, run: RequestRun, cancel: threading.Event) -> Iterator[Event]:
        prompt = prepared.prompt
        total = len(prompt) - run.reused
        yield PrefillProgress(0, total, None)
        tokens: Optional[Iterator[TokenStep]] = None
        try:
            if self._wants_mtp(prepared, run):
                run.drafter = MtpDrafter(self.mtp)  # before prefill: it fills the MTP's cache
            # Everything but the last prompt token: generate_step runs that one, for the first logits.
            for chunk in self._prefill(prepared, run, prompt[len(run.held) : -1], cancel):
                yield PrefillProgress(run.prefilled, total, chunk.eta_s)
            if cancel.is_set():
                yield Finished("cancelled", run.stats(len(prompt)))
                return
            tokens = self._start_decoding(prepared, run)
            first = next(tokens)
            run.first_token_at = time.perf_counter()
            yield PrefillProgress(total, total, 0.0)
            reason, answer = yield from decode_reply(self.tokenizer, prepared, run, tokens, first, cancel)
        except Exception as error:  # MLX errors (out of memory, ...) end the stream, not the app
            run.broken = True
            yield Failed(f"Generation failed: {error}")
            yield Finished("error", run.stats(len(prompt)))
            return
        finally:
            if tokens is not None:
                tokens.close()
        yield Finished(reason, run.stats(len(prompt)))
        if reason != "cancelled" and prepared.request.conversation_id and self.reencode_replies:
            try:
                self._reencode_reply(prepared, run, answer, cancel)
            except Exception:  # the answer is complete: a failure here only costs the cache
                run.broken = True

    def _prefill(
        self, prepared: PreparedRequest, run: RequestRun, tokens: list[int], cancel: threading.Event
    ) -> Iterator[PrefillChunk]:
        """The shared prefill loop, keeping ``run`` in step with every finished chunk.

        Chunks end at the run's snapshot boundaries, where the linear layers' state is kept.
        """
        start = len(run.held)
        model = self.model
        if isinstance(run.drafter, MtpDrafter) and run.generated == 0 and run.speculation is None:
            model = MtpPrefill(body_of(self.model), run.drafter)  # the MTP's cache follows
        for chunk in prefill(
            model, run.layers, tokens, self.prefill_policy, cancel,
            kv_bits=prepared.request.kv_bits, stops=[b - start for b in run.boundaries],
        ):
            run.held.extend(chunk.tokens)
            run.prefilled = len(run.held) - run.reused
            run.snapshot_if_at_boundary()
            yield chunk

    def _start_decoding(self, prepared: PreparedRequest, run: RequestRun) -> Iterator[TokenStep]:
        """generate_step from the filled cache over the one prompt token it does not hold yet,
        or speculative decoding (speculative.py) where a drafter applies."""
        request = prepared.request
        prompt = prepared.prompt
        drafter = self._drafter_for(prepared, run)
        if drafter is not None:
            run.drafter = drafter
            run.speculation = SpeculationStats(drafter.kind)
            sampling = prepared.sampling
            return speculative_steps(
                self.model,
                run.layers,
                prompt,
                drafter,
                sampler=self._sampler(sampling),
                logits_processors=make_request_logits_processors(sampling),
                processors_for=lambda prefilled: make_request_logits_processors(sampling, prefilled),
                forward=forward_with_hidden(self.model) if drafter.kind == "mtp" else None,
                max_tokens=prepared.max_tokens,
                stats=run.speculation,
                num_draft=self.num_draft_tokens,
                kv_bits=request.kv_bits,
                kv_group_size=KV_GROUP_SIZE,
            )
        return generate_step(
            mx.array(prompt[len(run.held) :]),
            self.model,
            max_tokens=prepared.max_tokens,
            sampler=self._sampler(prepared.sampling),
            logits_processors=make_request_logits_processors(prepared.sampling, prompt[:-1]),
            prompt_cache=run.layers,
            kv_bits=request.kv_bits,
            kv_group_size=KV_GROUP_SIZE,
            # A requested KV quantization covers the whole context, as the memory plan assumes.
            quantized_kv_start=0,
        )

    def _sampler(self, sampling: SamplingParams) -> Sampler:
        """The request's sampler; in a group, rank 0's draw is every rank's token."""
        return leader_sampler(make_request_sampler(sampling, self._shape.vocab_size), self.group)

    def _drafter_for(self, prepared: PreparedRequest, run: RequestRun) -> Optional[Drafter]:
        """The draft model if loaded and wanted; else prompt lookup if on (or auto, long prompt)."""
        request = prepared.request
        prompt = prepared.prompt
        if not self._speculates or len(run.held) != len(prompt) - 1:
            return None
        if isinstance(run.drafter, MtpDrafter):
            return run.drafter  # made before the prefill (_wants_mtp)
        if self.draft_model is not None and request.use_draft_model:
            checkout = self._draft_caches.checkout(
                request.conversation_id,
                prompt,
                lambda: make_prompt_cache(self.draft_model),
                self._signature(request),
            )
            drafter = DraftModelDrafter(
                self.draft_model,
                checkout.layers,
                prompt[: checkout.reused],
                kv_bits=request.kv_bits,
                kv_group_size=KV_GROUP_SIZE,
                marks=checkout.snapshots,
            )
            drafter.catch_up(prompt)  # the draft's prefill, part of the time to first token
            return drafter
        lookup = request.prompt_lookup
        if lookup == "on" or (lookup == "auto" and len(prompt) >= self.prompt_lookup_min_tokens):
            return PromptLookupDrafter()
        return None

    def _wants_mtp(self, prepared: PreparedRequest, run: RequestRun) -> bool:
        """The MTP layer drafts when loaded, wanted, and no draft model is chosen."""
        request = prepared.request
        return (
            self.mtp is not None
            and request.use_mtp
            and not (self.draft_model is not None and request.use_draft_model)
        )

    def _reencode_reply(
        self, prepared: PreparedRequest, run: RequestRun, answer: str, cancel: threading.Event
    ) -> None:
        """Make the cache hold this reply the way the next turn's prompt will show it.

        Qwen3's template renders an earlier reply without its <think> block (even the empty one
        of non-thinking mode), so the next prompt diverges from the cache right where this reply
        starts. Re-encoding the reply now, while the user reads it, takes that work off the next
        turn's time to first token. It is exactly the work the next turn would otherwise do, it
        stops between chunks on cancel, and a next prompt that differs anyway (an edited
        history) still reuses only what matches.

        A hybrid cache can't be trimmed to where the history diverges: it goes back to the
        snapshot before the generation prompt (taken during this prefill), and the re-encoded
        reply's end is snapshotted too, for a next turn whose user message is edited.
        """
        if cancel.is_set():
            return
        if prepared.request.tools and "<tool_call>" in answer:
            # The next request carries this turn as structured tool_calls and tool results,
            # which no plain-text rendering of the reply matches: re-encoding would be wasted.
            return
        history = self._renderer.history_tokens(prepared, answer)
        if history is None:
            return
        keep = common_prefix_length(run.held, history)
        if keep == len(history):
            return
        if keep < len(run.held):
            position = rewind(run.layers, len(run.held), run.snapshots, keep)
            if position is None:
                return
            run.held = run.held[:position]
        if run.boundaries:
            run.want_snapshots_at([len(history)])
        for _ in self._prefill(prepared, run, history[len(run.held) :], cancel):
            pass


def _same_tokenizer(a: Qwen3Tokenizer, b: Qwen3Tokenizer) -> bool:
    """Same ids for the same text, and the same end-of-turn tokens: drafts are compared by id."""
    probe = "Hello, world! <think>2 + 2 = 4</think> Qwen3 ÄÖÜ 你好 \n\tdef f(x): return x"
    return (
        a.vocab_size == b.vocab_size
        and a.eos_token_ids == b.eos_token_ids
        and a.encode(probe) == b.encode(probe)
    )
