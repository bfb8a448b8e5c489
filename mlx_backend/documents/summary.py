"""Long-document summaries: a plan computed (and shown) before any work, then its execution.

The plan weighs the documents' token count against the model's context window (from its
config: ``max_position_embeddings`` and ``rope_scaling``) and the machine's memory (via
``memory.plan_memory``), and picks, in this order of preference:

(a) the whole document in one pass, when prompt + answer fit the native context and memory;
(b) the same with YaRN (``yarn_factor=4``) for a hybrid Qwen3 whose native window is too short;
(c) either of those with an 8-bit KV cache when only that makes the cache fit in memory;
(d) map-reduce: split at paragraph/heading boundaries into parts that each fit with their
    prompt and answer room, summarize each part, then combine the part summaries.

A one-pass summary puts the document text in the user message of a normal chat request, so a
follow-up question in the same ``conversation_id`` is served from the engine's prompt cache
instead of prefilling the document again.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Literal, Mapping, Optional, Sequence

from mlx_backend.documents.reading import Document
from mlx_backend.errors import ContextOverflowError, DocumentError
from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, Failed, Finished, PrefillProgress, ThinkingDelta
from mlx_backend.models.limits import DEFAULT_YARN_FACTOR, context_window
from mlx_backend.memory.plan import MemoryPlan, plan_memory
from mlx_backend.models.rope import normalize_rope_scaling

# Qwen's published long-context recipe: YaRN factor 4 over the 32,768-token pre-training window.
YARN_FACTOR = DEFAULT_YARN_FACTOR
QWEN3_ORIGINAL_CONTEXT = 32768
# Token counting walks huge texts in pieces of this many characters (bounded memory).
_COUNT_CHUNK_CHARS = 256 * 1024
# Rendering details (joins between documents, piece boundaries) shift counts by a few tokens.
_TOKEN_MARGIN = 32
# A part smaller than this is not worth a request: the context left after overhead is too small.
_MIN_PART_TOKENS = 64

Stage = Literal["single", "map", "reduce", "combine"]

DEFAULT_INSTRUCTIONS = (
    "Summarize the document above. Start with a short overview paragraph, then list the key "
    "points (facts, figures, decisions, open questions) as bullets. Write in the document's language."
)
_DEFAULT_INSTRUCTIONS_MANY = (
    "Summarize the documents above. Start with a short overview, then give the key points of each "
    "document as bullets under its name. Write in the documents' language."
)
_PART_INSTRUCTIONS = (
    "This is part {part} of {parts} of a longer text. Summarize this part on its own in a few "
    "short bullets, keeping names, numbers, dates and decisions. No introduction, no conclusion."
)
_MERGE_INSTRUCTIONS = (
    "These are summaries of consecutive parts of a longer text. Merge them into one shorter "
    "summary that keeps every key fact, name, number and decision, in order."
)


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryProgress:
    """Which step of the plan runs now: ``part`` of ``parts`` in ``stage``.

    stage "single": the whole document in one request (part 1 of 1); "map": summarizing part
    ``part``; "reduce": merging group ``part`` of intermediate summaries; "combine": the final
    answer, which streams as ``AnswerDelta``.
    """

    part: int
    parts: int
    stage: Stage


@dataclass(frozen=True)
class PartSummary:
    """A finished part summary (map) or merged group (reduce), kept so the user can read them."""

    part: int
    parts: int
    stage: Stage
    text: str


@dataclass(frozen=True)
class SummaryRequestStarted:
    """The request whose answer is the summary. Follow-up questions extend ``request.messages``
    (see ``follow_up_request``) with the same conversation id, YaRN and KV settings."""

    request: ChatRequest


# --- model facts and options ---------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about a model, without touching its weights."""

    name: str
    config: Mapping[str, Any] = field(repr=False)
    # "hybrid" (Qwen3: YaRN may be switched on per request), "always"/"never" (2507 models).
    thinking_mode: str

    @classmethod
    def from_engine(cls, engine: Any) -> "ModelFacts":
        info = engine.info
        # The checkpoint's config.json (quantization included) when the model was loaded from
        # a folder; a bare model's arguments otherwise.
        load_info = getattr(engine.model, "load_info", None)
        config = dict(load_info.config) if load_info is not None else dict(vars(engine.model.args))
        return cls(name=info.name, config=config, thinking_mode=info.thinking_mode)


@dataclass(frozen=True)
class ContextLimits:
    """The model's context window in tokens (prompt and answer together)."""

    native: int
    # The window with YaRN switched on for one request; None when the model doesn't offer it.
    with_yarn: Optional[int]
    # The config itself already enables YaRN (so ``native`` is the extended window).
    yarn_in_config: bool = False

    def describe(self) -> str:
        text = f"{self.native:,} tokens"
        if self.yarn_in_config:
            text += " (YaRN enabled in the model's config)"
        elif self.with_yarn:
            text += f" ({self.with_yarn:,} with YaRN ×{YARN_FACTOR:g})"
        return text


def context_limits(config: Mapping[str, Any], thinking_mode: str) -> ContextLimits:
    """The window from the config, by the engine's rules (``Engine.context_length``).

    Qwen3 dense/MoE: ``max_position_embeddings`` 40,960 (32,768 trained plus answer room), and
    YaRN ×4 over the 32,768 trained positions gives 131,072. 2507 models: 262,144 natively, no
    YaRN offered. Hybrid Qwen3 is the family Qwen publishes the YaRN recipe for."""
    positions = int(config.get("max_position_embeddings") or QWEN3_ORIGINAL_CONTEXT)
    scaling = normalize_rope_scaling(config.get("rope_scaling") or config.get("rope_parameters"))
    native = context_window(positions, scaling)
    if scaling and scaling.get("rope_type") == "yarn" and scaling.get("factor"):
        return ContextLimits(native=native, with_yarn=None, yarn_in_config=True)
    if thinking_mode == "hybrid":
        return ContextLimits(native=native, with_yarn=context_window(positions, scaling, YARN_FACTOR))
    return ContextLimits(native=native, with_yarn=None)


@dataclass(frozen=True)
class SummaryOptions:
    # Extra wishes for the final summary ("focus on the risks"); None: the default instructions.
    instructions: Optional[str] = None
    # Answer room: the final summary, and each part's summary in map-reduce.
    answer_tokens: int = 1536
    part_answer_tokens: int = 512
    # Summaries need no reasoning trace; None would use the model's default.
    enable_thinking: Optional[bool] = False
    allow_yarn: bool = True
    allow_kv8: bool = True
    # Memory budget override in bytes (None: what this machine allows).
    budget_bytes: Optional[int] = None
    seed: Optional[int] = None
    # The chat's system prompt: the same one as in follow-up turns, so their prefix matches.
    system_prompt: Optional[str] = None
    # Context kept free after the summary for a follow-up question and its answer (capped at a
    # third of the window), so asking about the document doesn't overflow right away.
    follow_up_tokens: int = 1024


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A slice of one document that fits the context with its prompt and answer room."""

    index: int  # 1-based
    document_index: int
    text: str
    tokens: int


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
            label = f"Whole document in one pass with YaRN ×{self.yarn_factor:g}"
        else:
            label = "Whole document in one pass"
        if self.kv_bits:
            label += f", {self.kv_bits}-bit KV cache"
        return label

    @property
    def description(self) -> str:
        """What will happen and why, in plain words, for the plan panel and the CLI."""
        names = ", ".join(_document_label(d) for d in self.documents)
        lines = [
            f"Documents: {names}: {self.document_tokens:,} tokens.",
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
                f"room left for follow-up questions, which reuse the document already in memory.{why}"
            )
        else:
            biggest = max(p.tokens for p in self.parts)
            reason = ("the documents are longer than the context" if self.window >= self.limits.native
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
            messages=_messages(content, self.options),
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
        content = _single_pass_prompt(self.documents, self.options.instructions)
        return self._request(content, max_tokens=self.answer_tokens, conversation_id=conversation_id, yarn=True)

    def part_request(self, part: Part) -> ChatRequest:
        document = self.documents[part.document_index]
        content = _part_prompt(document, part.text, part.index, len(self.parts))
        return self._request(content, max_tokens=self.part_answer_tokens)

    def merge_request(self, summaries: Sequence[str], first_part: int) -> ChatRequest:
        content = _combine_prompt(summaries, first_part, _MERGE_INSTRUCTIONS)
        return self._request(content, max_tokens=self.part_answer_tokens)

    def combine_request(self, summaries: Sequence[str], conversation_id: Optional[str] = None) -> ChatRequest:
        content = _combine_prompt(summaries, 1, _final_instructions(self.documents, self.options))
        return self._request(content, max_tokens=self.answer_tokens, conversation_id=conversation_id)


def follow_up_request(summary_request: ChatRequest, summary: str, question: str, *,
                      enable_thinking: Optional[bool] = None, max_tokens: Optional[int] = None) -> ChatRequest:
    """The next turn after a summary: same conversation, YaRN and KV settings, so the engine's
    prompt cache still holds the document and only the new turn is prefilled."""
    messages = summary_request.messages + (ChatMessage("assistant", summary), ChatMessage("user", question))
    return replace(summary_request, messages=messages, enable_thinking=enable_thinking,
                   max_tokens=max_tokens or summary_request.max_tokens)


# --- prompts -----------------------------------------------------------------------------------

# Literal control tokens inside a document (a file about chat templates, say) must stay text:
# the tokenizer would encode them as real turn, thinking or tool markers and break the chat.
_CONTROL_TOKEN = re.compile(r"<\|([A-Za-z0-9_]+)\|>")
_TAG_TOKEN = re.compile(r"<(/?)(think|tool_call|tool_response)>")


def neutralize_control_tokens(text: str) -> str:
    """``<|im_end|>`` -> ``<｜im_end｜>``, ``<think>`` -> ``＜think＞``: still readable, no longer special."""
    text = _CONTROL_TOKEN.sub(lambda m: f"<｜{m.group(1)}｜>", text)
    return _TAG_TOKEN.sub(lambda m: f"＜{m.group(1)}{m.group(2)}＞", text)


def _document_label(document: Document) -> str:
    if document.pages:
        return f"{document.name} ({document.pages:,} page{'s' if document.pages != 1 else ''})"
    return document.name


def _attribute(value: str) -> str:
    return value.replace('"', "'").replace("\n", " ")


def _document_block(document: Document, text: str, part: Optional[tuple[int, int]] = None) -> str:
    attributes = f'name="{_attribute(document.name)}"'
    if document.pages:
        attributes += f' pages="{document.pages}"'
    if part:
        attributes += f' part="{part[0]} of {part[1]}"'
    body = neutralize_control_tokens(text)
    if document.kind == "code":
        body = f"```{document.language or ''}\n{body}\n```"
    return f"<document {attributes}>\n{body}\n</document>"


def _single_pass_prompt(documents: Sequence[Document], instructions: Optional[str]) -> str:
    wishes = instructions or (_DEFAULT_INSTRUCTIONS_MANY if len(documents) > 1 else DEFAULT_INSTRUCTIONS)
    blocks = [_document_block(d, d.text) for d in documents]
    return "\n\n".join(blocks) + "\n\n" + wishes


def _final_instructions(documents: Sequence[Document], options: SummaryOptions) -> str:
    wishes = options.instructions or (_DEFAULT_INSTRUCTIONS_MANY if len(documents) > 1 else DEFAULT_INSTRUCTIONS)
    wishes = wishes.replace("documents above", "documents").replace("document above", "document")
    names = ", ".join(d.name for d in documents)
    return f"These are summaries of consecutive parts of {names}. Combine them into one summary of the whole. {wishes}"


def _part_prompt(document: Document, text: str, part: int, parts: int) -> str:
    return _document_block(document, text, (part, parts)) + "\n\n" + _PART_INSTRUCTIONS.format(part=part, parts=parts)


def _combine_prompt(summaries: Sequence[str], first_part: int, instructions: str) -> str:
    sections = [f"## Part {first_part + i}\n{neutralize_control_tokens(s.strip()) or '(nothing of note)'}"
                for i, s in enumerate(summaries)]
    return "<summaries>\n" + "\n\n".join(sections) + "\n</summaries>\n\n" + instructions


# --- token counting ----------------------------------------------------------------------------


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut after a newline where possible."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            newline = text.rfind("\n", start + size // 2, end)
            end = newline + 1 if newline != -1 else end
        yield text[start:end]
        start = end


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens in ``text``, counted piecewise so a huge document never holds all its ids at once."""
    total = 0
    batch: list[str] = []
    for piece in _pieces(text, _COUNT_CHUNK_CHARS):
        batch.append(piece)
        if len(batch) == 8:
            total += sum(len(ids) for ids in tokenizer.encode_batch(batch))
            batch = []
    if batch:
        total += sum(len(ids) for ids in tokenizer.encode_batch(batch))
    return total


def _messages(content: str, options: SummaryOptions) -> tuple[ChatMessage, ...]:
    system = (ChatMessage("system", options.system_prompt),) if options.system_prompt else ()
    return system + (ChatMessage("user", content),)


def _prompt_tokens(tokenizer: Any, content: str, options: SummaryOptions) -> int:
    ids = tokenizer.apply_chat_template(list(_messages(content, options)), add_generation_prompt=True,
                                        enable_thinking=options.enable_thinking, tokenize=True)
    return len(ids)


# --- splitting ---------------------------------------------------------------------------------

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def split_blocks(text: str) -> list[str]:
    """Paragraphs and headings: the units a part boundary may fall between."""
    return [block.strip() for block in _BLANK_LINES.split(text) if block.strip()]


def _is_heading(block: str) -> bool:
    return bool(re.match(r"#{1,6} ", block)) or (len(block) < 80 and "\n" not in block and block.isupper())


def _split_oversized(tokenizer: Any, block: str, budget: int) -> list[tuple[str, int]]:
    """A block longer than a part, cut at lines, then sentences, then (last resort) tokens."""
    for splitter in (lambda b: b.split("\n"), _SENTENCE_END.split):
        units = [u for u in splitter(block) if u.strip()]
        if len(units) > 1:
            counts = [len(ids) for ids in tokenizer.encode_batch(units)]
            joiner = "\n" if "\n" in block else " "
            return _pack(tokenizer, list(zip(units, counts)), budget, joiner)
    # Re-encoding a decoded slice can differ by a token or two where a character was cut.
    step = max(1, budget - 8)
    ids = tokenizer.encode(block)
    return [(tokenizer.decode(ids[i:i + step]), len(ids[i:i + step])) for i in range(0, len(ids), step)]


def _pack(tokenizer: Any, units: list[tuple[str, int]], budget: int, joiner: str,
          heading_aware: bool = False) -> list[tuple[str, int]]:
    """Greedy packing of (text, tokens) units into pieces of at most ``budget`` tokens.

    The joiner counts as one token: joining usually merges it into a neighbouring token, so the
    sum of the units' counts is an upper bound of the piece's real count."""
    pieces: list[tuple[str, int]] = []
    current: list[tuple[str, int]] = []
    used = 0

    def flush() -> None:
        nonlocal current, used
        if current:
            pieces.append((joiner.join(text for text, _ in current), used))
        current, used = [], 0

    for text, tokens in units:
        if tokens > budget:
            flush()
            pieces.extend(_split_oversized(tokenizer, text, budget))
            continue
        # A new section starts a new part once the current one is well filled: parts then
        # follow the document's own outline instead of cutting a section's first lines off.
        starts_section = heading_aware and _is_heading(text) and used > budget * 0.6
        if current and (used + 1 + tokens > budget or starts_section):
            carried = None
            if heading_aware and len(current) > 1 and _is_heading(current[-1][0]):
                carried = current.pop()  # never end a part on a dangling heading
                used -= carried[1] + 1
            flush()
            if carried is not None and carried[1] + 1 + tokens <= budget:
                current, used = [carried], carried[1]
            elif carried is not None:
                pieces.append(carried)
        used += tokens + (1 if current else 0)
        current.append((text, tokens))
    flush()
    return pieces


def split_into_parts(tokenizer: Any, documents: Sequence[Document], budget: int) -> tuple[Part, ...]:
    """Every document cut into parts of at most ``budget`` text tokens (documents never share a part)."""
    parts: list[Part] = []
    for doc_index, document in enumerate(documents):
        blocks = split_blocks(document.text)
        counts: list[int] = []
        for start in range(0, len(blocks), 512):
            counts += [len(ids) for ids in tokenizer.encode_batch(blocks[start:start + 512])]
        for text, tokens in _pack(tokenizer, list(zip(blocks, counts)), budget, "\n\n", heading_aware=True):
            parts.append(Part(len(parts) + 1, doc_index, text, tokens))
    return tuple(parts)


# --- planning ----------------------------------------------------------------------------------


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


def plan_summary(documents: Sequence[Document], tokenizer: Any, model: ModelFacts,
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
            tokenizer, neutralize_control_tokens(document.text))
        counted.append(document.with_tokens(tokens))
    documents = tuple(counted)
    limits = context_limits(model.config, model.thinking_mode)
    # Thinking-2507 always reasons before answering: that reasoning needs room too.
    answer_scale = 2 if model.thinking_mode == "always" and options.enable_thinking is not True else 1

    overhead = _prompt_tokens(tokenizer, _single_pass_prompt(
        [replace(d, text="") for d in documents], options.instructions), options)
    prompt_tokens = overhead + sum(d.tokens or 0 for d in documents) + _TOKEN_MARGIN
    answer = min(options.answer_tokens * answer_scale, max(limits.native // 4, 16))

    base = dict(documents=documents, model=model, limits=limits, options=options, overhead_tokens=overhead)
    windows: list[tuple[int, Optional[float]]] = [(limits.native, None)]
    if options.allow_yarn and limits.with_yarn:
        windows.append((limits.with_yarn, YARN_FACTOR))
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


def _plan_map_reduce(documents, tokenizer, model, limits, options, answer_scale, base) -> SummaryPlan:
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
    part_overhead = _prompt_tokens(tokenizer, _part_prompt(widest, "", 99999, 99999), options)
    part_budget = window - part_overhead - part_answer - _TOKEN_MARGIN
    combine_overhead = max(
        _prompt_tokens(tokenizer, _combine_prompt([""], 99999, instructions), options)
        for instructions in (_MERGE_INSTRUCTIONS, _final_instructions(documents, options)))
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


def plan_for_engine(engine: Any, documents: Sequence[Document], options: SummaryOptions = SummaryOptions(),
                    cancel: Optional[threading.Event] = None) -> SummaryPlan:
    return plan_summary(documents, engine.tokenizer, ModelFacts.from_engine(engine), options, cancel)


# --- execution ---------------------------------------------------------------------------------


def _collect(engine: Any, request: ChatRequest, cancel: Optional[threading.Event],
             sink: list[str]) -> Iterator[object]:
    """Run an intermediate request: pass prefill progress on, keep the answer text in ``sink``.

    Yields a terminal event (cancelled/error ``Finished`` or ``Failed``) when the run must stop."""
    for event in engine.stream(request, cancel):
        if isinstance(event, PrefillProgress):
            yield event
        elif isinstance(event, AnswerDelta):
            sink.append(event.text)
        elif isinstance(event, Failed):
            yield event
        elif isinstance(event, Finished) and event.reason in ("cancelled", "error"):
            yield event


def _is_terminal(event: object) -> bool:
    return isinstance(event, Failed) or (isinstance(event, Finished) and event.reason in ("cancelled", "error"))


def run_summary(engine: Any, plan: SummaryPlan, cancel: Optional[threading.Event] = None, *,
                conversation_id: Optional[str] = None) -> Iterator[object]:
    """Carry out ``plan``: yields ``SummaryProgress``/``PartSummary``, the engine's prefill
    progress for every request, ``SummaryRequestStarted`` and then every event of the final
    request (its answer streams as ``AnswerDelta``; its ``Finished`` ends the run).

    Parts' own answers are not yielded as ``AnswerDelta``, only kept (``PartSummary``), so a chat
    view shows one answer. A cancel or failure ends the run with the engine's event."""
    if plan.strategy == "single_pass":
        request = plan.single_pass_request(conversation_id)
        yield SummaryProgress(1, 1, "single")
        yield SummaryRequestStarted(request)
        yield from engine.stream(request, cancel)
        return

    tokens = _TokenTools(engine.tokenizer)
    summaries: list[str] = []
    total = len(plan.parts)
    for part in plan.parts:
        yield SummaryProgress(part.index, total, "map")
        sink: list[str] = []
        stopped = False
        for event in _collect(engine, plan.part_request(part), cancel, sink):
            yield event
            stopped = stopped or _is_terminal(event)
        if stopped:
            return
        summaries.append("".join(sink).strip())
        yield PartSummary(part.index, total, "map", summaries[-1])

    # Merge groups of summaries until they all fit one combine request.
    while True:
        groups = _group_summaries(summaries, plan.combine_budget, tokens)
        if len(groups) <= 1:
            summaries = groups[0] if groups else []
            break
        merged: list[str] = []
        first = 1
        for number, group in enumerate(groups, start=1):
            yield SummaryProgress(number, len(groups), "reduce")
            request = _fitted(lambda texts, first=first: plan.merge_request(texts, first), group, plan.window, tokens)
            sink = []
            stopped = False
            for event in _collect(engine, request, cancel, sink):
                yield event
                stopped = stopped or _is_terminal(event)
            if stopped:
                return
            first += len(group)
            merged.append("".join(sink).strip())
            yield PartSummary(number, len(groups), "reduce", merged[-1])
        summaries = merged

    request = _fitted(lambda texts: plan.combine_request(texts, conversation_id), summaries, plan.window, tokens)
    yield SummaryProgress(total, total, "combine")
    yield SummaryRequestStarted(request)
    yield from engine.stream(request, cancel)


class _TokenTools:
    """Counting and cutting model-written text by tokens (a summary's text, re-encoded, can be
    longer than the tokens that produced it, so characters are no guide)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text))

    def cut(self, text: str, limit: int) -> str:
        ids = self._tokenizer.encode(text)
        return text if len(ids) <= limit else self._tokenizer.decode(ids[:max(1, limit)])

    def prompt(self, request: ChatRequest) -> int:
        return len(self._tokenizer.apply_chat_template(
            list(request.messages), add_generation_prompt=True, enable_thinking=request.enable_thinking))


def _fitted(build: Callable[[list[str]], ChatRequest], summaries: Sequence[str], window: int,
            tokens: _TokenTools) -> ChatRequest:
    """``build(summaries)``, with the longest summary cut until prompt + answer room fit ``window``
    (the plan's budgets are estimates; this is the exact check)."""
    texts = list(summaries)
    for _ in range(16):
        request = build(texts)
        excess = tokens.prompt(request) + request.max_tokens - window
        if excess <= 0 or not texts:
            return request
        longest = max(range(len(texts)), key=lambda i: len(texts[i]))
        texts[longest] = tokens.cut(texts[longest], tokens.count(texts[longest]) - excess - 8)
    return request  # still too long: the engine refuses it with a clear ContextOverflowError


def _group_summaries(summaries: Sequence[str], budget: int, tokens: _TokenTools) -> list[list[str]]:
    """Consecutive summaries packed into groups of at most ``budget`` tokens.

    Each summary is held to half the budget (cut if a model ran long), so every group takes at
    least two and each merge round shrinks the pile: the loop always ends."""
    per_section = 12  # the "## Part N" heading and blank lines around a summary
    cap = budget // 2
    groups: list[list[str]] = [[]]
    used = 0
    for text in summaries:
        size = tokens.count(text) + per_section
        if size > cap:
            text = tokens.cut(text, cap - per_section)
            size = cap
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(text)
        used += size
    return groups


# --- progress ----------------------------------------------------------------------------------


class SummaryTracker:
    """Turns a summary's event stream into what a progress bar shows: a step label, the whole
    run's fraction, the current prefill's fraction and ETAs. Shared by the CLI and the app.

    Map-reduce weighs every part (and the final combine) as one step; merge rounds are short
    and count as part of the combine step."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._parts = 0  # learnt from the first "map" step: a job may re-plan before it runs
        self._clock = clock
        self._started = clock()
        self.stage: Optional[SummaryProgress] = None
        self.prefill_fraction = 0.0
        self.prefill_eta_s: Optional[float] = None
        self.answering = False
        self.done = False

    def feed(self, event: object) -> bool:
        """Take one event; True when the display should change."""
        if isinstance(event, SummaryProgress):
            self.stage, self.prefill_fraction, self.prefill_eta_s = event, 0.0, None
            if event.stage == "map":
                self._parts = event.parts
            return True
        if isinstance(event, PrefillProgress) and event.total > 0:
            self.prefill_fraction = min(1.0, event.done / event.total)
            self.prefill_eta_s = event.eta_s if event.done < event.total else 0.0
            return True
        if isinstance(event, (AnswerDelta, ThinkingDelta)) and not self.answering and self.is_final_step:
            self.answering = True
            return True
        if isinstance(event, Finished):
            self.done = True
            return True
        return False

    @property
    def is_final_step(self) -> bool:
        return self.stage is not None and self.stage.stage in ("single", "combine")

    @property
    def label(self) -> str:
        stage = self.stage
        if self.done:
            return "Done"
        if stage is None:
            return "Starting"
        if stage.stage == "single":
            return "Writing the summary" if self.answering else "Reading the document"
        if stage.stage == "map":
            return f"Summarizing part {stage.part} of {stage.parts}"
        if stage.stage == "reduce":
            return f"Merging part summaries ({stage.part} of {stage.parts})"
        return "Writing the summary" if self.answering else "Combining the part summaries"

    @property
    def fraction(self) -> float:
        """The whole run's progress, 0..1 (the final answer's generation is not counted)."""
        if self.done:
            return 1.0
        stage = self.stage
        if stage is None:
            return 0.0
        if stage.stage == "single":
            return self.prefill_fraction
        steps = self._parts + 1
        if stage.stage == "map":
            return min(1.0, (stage.part - 1 + self.prefill_fraction) / steps)
        return min(1.0, (self._parts + (self.prefill_fraction if stage.stage == "combine" else 0.0)) / steps)

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    @property
    def eta_s(self) -> Optional[float]:
        """Time left for the reading/summarizing steps, from the pace so far (None: too early)."""
        if self.done:
            return 0.0
        if self.stage is not None and self.stage.stage == "single":
            return self.prefill_eta_s
        fraction = self.fraction
        if fraction < 0.02:
            return None
        return self.elapsed_s * (1.0 - fraction) / fraction
