"""The summary plan, computed (and shown) before any work: how the documents will be read.

The plan weighs the documents' token count against the model's context window (by the rules
of ``mlx_backend.models.limits``) and the machine's memory (via ``memory.plan_memory``), and
picks, in this order of preference:

(a) the whole document in one pass, when prompt + answer fit the native context and memory;
(b) the same with YaRN (factor 4) for a hybrid Qwen3 whose native window is too short;
(c) either of those with an 8-bit KV cache when only that makes the cache fit in memory;
(d) map-reduce: split at paragraph/heading boundaries into parts that each fit with their
    prompt and answer room, summarize each part, then combine the part summaries.

A one-pass summary puts the document text in the user message of a normal chat request, so a
follow-up question in the same ``conversation_id`` is served from the engine's prompt cache
instead of prefilling the document again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Optional, Sequence

from mlx_backend.documents.reading import Document
from mlx_backend.documents.summary.facts import ContextLimits, ModelFacts, SummaryOptions, context_limits
from mlx_backend.documents.summary.prompts import (
    MERGE_INSTRUCTIONS,
    combine_prompt,
    count_prompt_tokens,
    document_label,
    final_instructions,
    part_prompt,
    request_messages,
    single_pass_prompt,
)
from mlx_backend.documents.summary.protocols import SummaryEngine, SummaryTokenizer
from mlx_backend.documents.summary.splitting import Part, location_of, longest_heading, split_into_parts
from mlx_backend.documents.summary.tokens import count_tokens
from mlx_backend.errors import ContextOverflowError, DocumentError
from mlx_backend.events import ChatMessage, ChatRequest
from mlx_backend.memory.plan import MemoryPlan, plan_memory
from mlx_backend.models.limits import DEFAULT_YARN_FACTOR

# Rendering details (joins between documents, piece boundaries) shift counts by a few tokens.
_TOKEN_MARGIN = 32
# A part smaller than this is not worth a request: the context left after overhead is too small.
_MIN_PART_TOKENS = 64


@dataclass(frozen=True)
class SummaryPlan:
    documents: tuple[Document, ...]  # with ``tokens`` filled in
    model: ModelFacts
    limits: ContextLimits
    strategy: Literal["single_pass", "map_reduce"]
    # The context the requests run in (native, YaRN-extended, or memory-limited).
    window: int
    prompt_tokens: int  # single pass: the whole prompt; map-reduce: the largest part's prompt
    answer_tokens: int
    part_answer_tokens: int
    yarn_factor: Optional[float]
    kv_bits: Optional[int]
    memory: MemoryPlan
    parts: tuple[Part, ...] = ()
    options: SummaryOptions = SummaryOptions()
    # Prompt tokens around the text (chat template, instructions, document tags).
    overhead_tokens: int = 0
    # Room for merged summaries in one combine/merge request.
    combine_budget: int = 0

    @property
    def document_tokens(self) -> int:
        return sum(d.tokens or 0 for d in self.documents)

    @property
    def estimated_prompt_tokens(self) -> int:
        """The prompt's own token count, without the safety margin ``prompt_tokens`` adds for
        a single pass (a map-reduce part's ``prompt_tokens`` has none)."""
        if self.strategy == "single_pass":
            return self.overhead_tokens + self.document_tokens
        return self.prompt_tokens

    @property
    def headline(self) -> str:
        if self.strategy == "map_reduce":
            label = f"Map-reduce in {len(self.parts)} parts"
        elif self.yarn_factor:
            label = f"{self._whole} in one pass with YaRN ×{self.yarn_factor:g}"
        else:
            label = f"{self._whole} in one pass"
        if self.kv_bits:
            label += f", {self.kv_bits}-bit KV cache"
        return label

    @property
    def _them(self) -> str:
        return "document" if len(self.documents) == 1 else f"{len(self.documents)} documents"

    @property
    def _whole(self) -> str:
        count = len(self.documents)
        return "Whole document" if count == 1 else f"All {count} documents"

    @property
    def description(self) -> str:
        """What will happen and why, in plain words, for the plan panel and the CLI."""
        names = ", ".join(document_label(d) for d in self.documents)
        count = len(self.documents)
        what = f"Document: {names}" if count == 1 else f"Documents: {count} documents ({names})"
        lines = [f"{what}: {self.document_tokens:,} tokens."]
        # How each file was read, where the user should know (skipped tables, renamed files).
        lines += [f"Note on {d.name}: {note}" for d in self.documents for note in d.notes]
        lines += [
            f"Model: {self.model.name}, context {self.limits.describe()}.",
            f"Memory: {self.memory.message}",
        ]
        kv = (f" with an {self.kv_bits}-bit KV cache (a full-precision cache would not fit comfortably in memory)"
              if self.kv_bits else "")
        if self.strategy == "single_pass":
            why = ""
            if self.yarn_factor:
                why = (f" YaRN ×{self.yarn_factor:g} is switched on for this request because the "
                       f"prompt is longer than the native {self.limits.native:,}-token context.")
            # prompt_tokens carries a safety margin for fitting; show the count itself.
            lines.append(
                f"Plan: {self.headline}. The prompt of about {self.estimated_prompt_tokens:,} tokens and up to "
                f"{self.answer_tokens:,} tokens of summary fit a {self.window:,}-token context{kv}, with "
                f"room left for follow-up questions, which reuse the {self._them} already in memory.{why}"
            )
        else:
            biggest = max(p.tokens for p in self.parts)
            reason = (f"the {self._them} {'is' if len(self.documents) == 1 else 'are'} longer than the context"
                      if self.window >= self.limits.native
                      else f"memory allows only a {self.window:,}-token context")
            lines.append(
                f"Plan: {self.headline}, because {reason}. Each part (up to {biggest:,} tokens, split at "
                f"paragraph and heading boundaries) is summarized in up to {self.part_answer_tokens:,} "
                f"tokens{kv}, then the part summaries are combined into one summary of up to "
                f"{self.answer_tokens:,} tokens."
            )
        return "\n".join(lines)

    # --- requests --------------------------------------------------------------------------

    def _request(self, content: str, *, max_tokens: int, conversation_id: Optional[str] = None,
                 yarn: bool = False) -> ChatRequest:
        return ChatRequest(
            messages=request_messages(content, self.options),
            conversation_id=conversation_id,
            enable_thinking=self.options.enable_thinking,
            max_tokens=max_tokens,
            seed=self.options.seed,
            kv_bits=self.kv_bits,
            yarn_factor=self.yarn_factor if yarn else None,
        )

    def single_pass_request(self, conversation_id: Optional[str] = None) -> ChatRequest:
        if self.strategy != "single_pass":
            raise ValueError("This plan summarizes in parts; it has no single-pass request.")
        content = single_pass_prompt(self.documents, self.options.instructions)
        return self._request(content, max_tokens=self.answer_tokens, conversation_id=conversation_id, yarn=True)

    def part_request(self, part: Part) -> ChatRequest:
        document = self.documents[part.document_index]
        content = part_prompt(document, part.text, part.index, len(self.parts), part.location)
        return self._request(content, max_tokens=self.part_answer_tokens)

    def merge_request(self, summaries: Sequence[str], first_part: int, locations: Sequence[str] = ()) -> ChatRequest:
        content = combine_prompt(summaries, first_part, MERGE_INSTRUCTIONS, locations)
        return self._request(content, max_tokens=self.part_answer_tokens)

    def combine_request(self, summaries: Sequence[str], conversation_id: Optional[str] = None,
                        locations: Sequence[str] = ()) -> ChatRequest:
        instructions = final_instructions(self.documents, self.options, located=any(locations))
        content = combine_prompt(summaries, 1, instructions, locations)
        return self._request(content, max_tokens=self.answer_tokens, conversation_id=conversation_id)


def follow_up_request(summary_request: ChatRequest, summary: str, question: str, *,
                      enable_thinking: Optional[bool] = None, max_tokens: Optional[int] = None) -> ChatRequest:
    """The next turn after a summary: same conversation, YaRN and KV settings, so the engine's
    prompt cache still holds the document and only the new turn is prefilled."""
    messages = summary_request.messages + (ChatMessage("assistant", summary), ChatMessage("user", question))
    return replace(summary_request, messages=messages, enable_thinking=enable_thinking,
                   max_tokens=max_tokens or summary_request.max_tokens)


def _memory_choice(config: Mapping[str, Any], tokens: int, options: SummaryOptions) -> Optional[MemoryPlan]:
    """The memory plan for ``tokens`` of context: full-precision KV if it fits comfortably, else
    8-bit KV, else whichever runs at all (tight), else None."""
    kv_choices = (None, 8) if options.allow_kv8 else (None,)
    plans = [plan_memory(config, tokens, kv_bits=bits, budget_bytes=options.budget_bytes) for bits in kv_choices]
    for wanted in ("fits", "tight"):
        for plan in plans:
            if plan.verdict == wanted:
                return plan
    return None


def _largest_window(config: Mapping[str, Any], limit: int, options: SummaryOptions) -> tuple[int, Optional[MemoryPlan]]:
    """The longest context up to ``limit`` that memory allows (binary search: KV grows with length)."""
    at_limit = _memory_choice(config, limit, options)
    if at_limit is not None:
        return limit, at_limit
    low, high = 0, limit  # low: known to fit (0 trivially), high: known not to
    while high - low > 16:
        middle = (low + high) // 2
        if _memory_choice(config, middle, options):
            low = middle
        else:
            high = middle
    return low, (_memory_choice(config, low, options) if low else None)


def plan_summary(documents: Sequence[Document], tokenizer: SummaryTokenizer, model: ModelFacts,
                 options: SummaryOptions = SummaryOptions(),
                 cancel: Optional[threading.Event] = None) -> SummaryPlan:
    """Count tokens and choose how to summarize ``documents`` (see the module docstring)."""
    if not documents:
        raise DocumentError("There is no document to summarize.")
    counted = []
    for document in documents:
        if cancel is not None and cancel.is_set():
            raise DocumentError("Reading the documents was cancelled.")
        tokens = document.tokens if document.tokens is not None else count_tokens(
            tokenizer, document.text)
        counted.append(document.with_tokens(tokens))
    documents = tuple(counted)
    limits = context_limits(model.config, model.thinking_mode)
    # Thinking-2507 always reasons before answering: that reasoning needs room too.
    answer_scale = 2 if model.thinking_mode == "always" and options.enable_thinking is not True else 1

    overhead = count_prompt_tokens(tokenizer, single_pass_prompt(
        [replace(d, text="") for d in documents], options.instructions), options)
    prompt_tokens = overhead + sum(d.tokens or 0 for d in documents) + _TOKEN_MARGIN
    answer = min(options.answer_tokens * answer_scale, max(limits.native // 4, 16))

    base = dict(documents=documents, model=model, limits=limits, options=options, overhead_tokens=overhead)
    windows: list[tuple[int, Optional[float]]] = [(limits.native, None)]
    if options.allow_yarn and limits.with_yarn:
        windows.append((limits.with_yarn, DEFAULT_YARN_FACTOR))
    for window, yarn in windows:
        follow_up = min(options.follow_up_tokens, window // 3)
        if prompt_tokens + answer + follow_up > window:
            continue
        memory = _memory_choice(model.config, prompt_tokens + answer + follow_up, options)
        if memory is not None:
            return SummaryPlan(strategy="single_pass", window=window, prompt_tokens=prompt_tokens,
                               answer_tokens=answer, part_answer_tokens=0, yarn_factor=yarn,
                               kv_bits=memory.kv_bits, memory=memory, **base)
    return _plan_map_reduce(documents, tokenizer, model, limits, options, answer_scale, base)


def _plan_map_reduce(documents: tuple[Document, ...], tokenizer: SummaryTokenizer, model: ModelFacts,
                     limits: ContextLimits, options: SummaryOptions, answer_scale: int,
                     base: dict[str, Any]) -> SummaryPlan:
    window, memory = _largest_window(model.config, limits.native, options)
    if memory is None:
        raise ContextOverflowError(
            f"{model.name}'s weights leave no memory for a context of any useful length. "
            "Choose a smaller or more strongly quantized model."
        )
    answer = min(options.answer_tokens * answer_scale, max(window // 4, 16))
    part_answer = min(options.part_answer_tokens * answer_scale, max(window // 8, 8))
    # The part prompt's fixed tokens, measured on the longest labels it can carry.
    widest = max(documents, key=lambda d: len(d.name))
    heading = longest_heading(documents)
    # The widest location label a part can carry ("sections “…” to “…”"), so parts with labels fit.
    paged = any(d.page_starts for d in documents)
    widest_location = location_of((heading, heading + " ") if heading else (), (99999, 99999) if paged else None)
    part_overhead = count_prompt_tokens(tokenizer, part_prompt(widest, "", 99999, 99999, widest_location), options)
    part_budget = window - part_overhead - part_answer - _TOKEN_MARGIN
    combine_overhead = max(
        count_prompt_tokens(tokenizer, combine_prompt([""], 99999, instructions), options)
        for instructions in (MERGE_INSTRUCTIONS, final_instructions(documents, options, located=True)))
    combine_budget = window - combine_overhead - answer - _TOKEN_MARGIN
    # The combine request opens the conversation: leave follow-up room after it too, as far as
    # merging (two part summaries per request at least) allows.
    merge_minimum = 2 * (part_answer + 16)
    follow_up = min(options.follow_up_tokens, window // 3)
    combine_budget = max(min(combine_budget, merge_minimum), combine_budget - follow_up)
    # Merging must shrink the pile: one request has to hold at least two part summaries.
    if part_budget < _MIN_PART_TOKENS or combine_budget < merge_minimum:
        raise ContextOverflowError(
            f"A {window:,}-token context is too small to summarize in parts (each part's prompt "
            f"alone needs {part_overhead:,} tokens). Choose a model with a longer context or more memory."
        )
    parts = split_into_parts(tokenizer, documents, part_budget)
    biggest = max(p.tokens for p in parts)
    return SummaryPlan(strategy="map_reduce", window=window, prompt_tokens=part_overhead + biggest,
                       answer_tokens=answer, part_answer_tokens=part_answer, yarn_factor=None,
                       kv_bits=memory.kv_bits, memory=memory, parts=parts,
                       combine_budget=combine_budget, **base)


def plan_for_engine(engine: SummaryEngine, documents: Sequence[Document], options: SummaryOptions = SummaryOptions(),
                    cancel: Optional[threading.Event] = None) -> SummaryPlan:
    return plan_summary(documents, engine.tokenizer, ModelFacts.from_engine(engine), options, cancel)

