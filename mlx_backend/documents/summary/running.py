"""Carrying out a summary plan: one request, or map-reduce over the parts."""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Optional, Sequence

from mlx_backend.documents.summary.events import PartSummary, PartWriting, SummaryProgress, SummaryRequestStarted
from mlx_backend.documents.summary.planning import SummaryPlan
from mlx_backend.documents.summary.protocols import SummaryEngine
from mlx_backend.documents.summary.splitting import location_of, page_span
from mlx_backend.documents.summary.tokens import TokenTools
from mlx_backend.events import AnswerDelta, ChatRequest, Failed, Finished, PrefillProgress


# A PartWriting event every this many answer pieces (about tokens).
_WRITING_EVERY = 8


def _collect(engine: SummaryEngine, request: ChatRequest, cancel: Optional[threading.Event],
             sink: list[str]) -> Iterator[object]:
    """Run an intermediate request: pass prefill progress on, keep the answer text in ``sink``.

    Yields a terminal event (cancelled/error ``Finished`` or ``Failed``) when the run must stop."""
    for event in engine.stream(request, cancel):
        if isinstance(event, PrefillProgress):
            yield event
        elif isinstance(event, AnswerDelta):
            sink.append(event.text)
            if len(sink) % _WRITING_EVERY == 0:
                yield PartWriting(len(sink))
        elif isinstance(event, Failed):
            yield event
        elif isinstance(event, Finished) and event.reason in ("cancelled", "error"):
            yield event


def _is_terminal(event: object) -> bool:
    return isinstance(event, Failed) or (isinstance(event, Finished) and event.reason in ("cancelled", "error"))


def run_summary(engine: SummaryEngine, plan: SummaryPlan, cancel: Optional[threading.Event] = None, *,
                conversation_id: Optional[str] = None) -> Iterator[object]:
    """Carry out ``plan``: yields ``SummaryProgress``/``PartSummary``, the engine's prefill
    progress for every request, ``SummaryRequestStarted`` and then every event of the final
    request (its answer streams as ``AnswerDelta``; its ``Finished`` ends the run).

    Parts' own answers are not yielded as ``AnswerDelta``, only kept (``PartSummary``), so a chat
    view shows one answer. A cancel or failure ends the run with the engine's event."""
    if plan.strategy == "single_pass":
        request = plan.single_pass_request(conversation_id)
        yield SummaryProgress(1, 1, "single", len(plan.documents))
        yield SummaryRequestStarted(request)
        yield from engine.stream(request, cancel)
        return

    tokens = TokenTools(engine.tokenizer)
    summaries: list[str] = []
    # The headings each summary covers, so merges and the final combine can say where points come from.
    spans: list[tuple[str, ...]] = []
    pages: list[Optional[tuple[int, int]]] = []
    total = len(plan.parts)
    for part in plan.parts:
        yield SummaryProgress(part.index, total, "map", len(plan.documents))
        sink: list[str] = []
        stopped = False
        for event in _collect(engine, plan.part_request(part), cancel, sink):
            yield event
            stopped = stopped or _is_terminal(event)
        if stopped:
            return
        summaries.append("".join(sink).strip())
        spans.append(part.sections)
        pages.append(part.pages)
        yield PartSummary(part.index, total, "map", summaries[-1])

    # Merge groups of summaries until they all fit one combine request.
    while True:
        groups = group_summaries(summaries, plan.combine_budget, tokens)
        if len(groups) <= 1:
            summaries = groups[0] if groups else []
            break
        merged: list[str] = []
        merged_spans: list[tuple[str, ...]] = []
        merged_pages: list[Optional[tuple[int, int]]] = []
        first = 1
        for number, group in enumerate(groups, start=1):
            yield SummaryProgress(number, len(groups), "reduce", len(plan.documents))
            group_spans = spans[first - 1:first - 1 + len(group)]
            group_pages = pages[first - 1:first - 1 + len(group)]
            locations = [location_of(span, page) for span, page in zip(group_spans, group_pages)]
            request = _fitted(lambda texts, first=first, locations=locations: plan.merge_request(texts, first, locations),
                              group, plan.window, tokens)
            sink = []
            stopped = False
            for event in _collect(engine, request, cancel, sink):
                yield event
                stopped = stopped or _is_terminal(event)
            if stopped:
                return
            first += len(group)
            merged.append("".join(sink).strip())
            merged_spans.append(tuple(heading for span in group_spans for heading in span))
            merged_pages.append(page_span(group_pages))
            yield PartSummary(number, len(groups), "reduce", merged[-1])
        summaries = merged
        spans, pages = merged_spans, merged_pages

    locations = [location_of(span, page) for span, page in zip(spans, pages)]
    request = _fitted(lambda texts: plan.combine_request(texts, conversation_id, locations), summaries,
                      plan.window, tokens)
    yield SummaryProgress(total, total, "combine", len(plan.documents))
    yield SummaryRequestStarted(request)
    yield from engine.stream(request, cancel)


def _fitted(build: Callable[[list[str]], ChatRequest], summaries: Sequence[str], window: int,
            tokens: TokenTools) -> ChatRequest:
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


def group_summaries(summaries: Sequence[str], budget: int, tokens: TokenTools) -> list[list[str]]:
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

