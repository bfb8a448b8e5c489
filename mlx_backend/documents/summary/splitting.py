"""Cutting documents into parts that fit a request: at paragraph and heading boundaries first,
then lines, sentences and (last resort) tokens."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Optional, Sequence

from mlx_backend.documents.reading import Document
from mlx_backend.documents.summary.protocols import SummaryTokenizer
from mlx_backend.documents.summary.tokens import TokenCounter

_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
# Blocks are counted in batches of this many (one tokenizer call each).
_COUNT_BATCH = 512


@dataclass(frozen=True)
class Part:
    """A slice of one document that fits the context with its prompt and answer room."""

    index: int  # 1-based
    document_index: int
    text: str
    tokens: int
    # The headings the part covers: the one in force where it starts, then those inside it.
    sections: tuple[str, ...] = ()
    # First and last page (1-based) when the document knows where its pages start.
    pages: Optional[tuple[int, int]] = None

    @property
    def location(self) -> str:
        """Where in its document the part is, for prompts ('pages 3–5, section “Budget”'), or ""."""
        return location_of(self.sections, self.pages)


def location_of(sections: Sequence[str], pages: Optional[tuple[int, int]] = None) -> str:
    """'pages 3–5', 'section “A”', 'sections “A” to “B”' or both ("" for nothing known)."""
    labels = []
    if pages:
        labels.append(f"page {pages[0]}" if pages[0] == pages[1] else f"pages {pages[0]}–{pages[1]}")
    if sections:
        first, last = _short(sections[0]), _short(sections[-1])
        labels.append(f"section “{first}”" if first == last else f"sections “{first}” to “{last}”")
    return ", ".join(labels)


def page_span(spans: Sequence[Optional[tuple[int, int]]]) -> Optional[tuple[int, int]]:
    """The pages a run of parts covers together."""
    known = [span for span in spans if span]
    return (min(s[0] for s in known), max(s[1] for s in known)) if known else None


def longest_heading(documents: Sequence[Document]) -> str:
    """The longest heading a label may carry (cut as labels cut it): the planner reserves its room."""
    headings = (_short(h) for d in documents for h in map(_markdown_heading, split_blocks(d.text)) if h)
    return max(headings, key=len, default="")


# A heading named in a label is cut to this many characters (the planner reserves room for two).
LABEL_CHARACTERS = 40


def _short(heading: str) -> str:
    return heading if len(heading) <= LABEL_CHARACTERS else heading[:LABEL_CHARACTERS - 1].rstrip() + "…"


def _markdown_heading(block: str) -> str:
    match = re.match(r"#{1,6} +(.+)", block)
    return " ".join(match.group(1).split()) if match and "\n" not in block else ""


def split_blocks(text: str) -> list[str]:
    """Paragraphs and headings: the units a part boundary may fall between."""
    return [block.strip() for block in _BLANK_LINES.split(text) if block.strip()]


def _is_heading(block: str) -> bool:
    return bool(re.match(r"#{1,6} ", block)) or (len(block) < 80 and "\n" not in block and block.isupper())


class _Packer:
    def __init__(self, tokenizer: SummaryTokenizer) -> None:
        self._tokenizer = tokenizer
        self.counter = TokenCounter(tokenizer)

    def split_oversized(self, block: str, budget: int) -> list[tuple[str, int]]:
        """A block longer than a part, cut at lines, then sentences, then (last resort) tokens."""
        for splitter in (lambda b: b.split("\n"), _SENTENCE_END.split):
            units = [u for u in splitter(block) if u.strip()]
            if len(units) > 1:
                joiner = "\n" if "\n" in block else " "
                return self.pack(list(zip(units, self.counter.count_many(units))), budget, joiner)
        # Re-encoding a decoded slice can differ by a token or two where a character was cut.
        step = max(1, budget - 8)
        ids = self._tokenizer.encode(block)
        slices = [self._tokenizer.decode(ids[i:i + step]) for i in range(0, len(ids), step)]
        return list(zip(slices, self.counter.count_many(slices)))

    def pack(self, units: list[tuple[str, int]], budget: int, joiner: str,
             heading_aware: bool = False) -> list[tuple[str, int]]:
        """Greedy packing of (text, tokens) units into pieces of at most ``budget`` tokens.

        The joiner counts as one token: joining usually merges it into a neighbouring token, so
        the sum of the units' counts is an upper bound of the piece's real count."""
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
                pieces.extend(self.split_oversized(text, budget))
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


def _text_span(text: str, piece: str, cursor: int) -> tuple[int, int]:
    """Where ``piece`` (blocks of ``text`` joined again, or a slice of one) lies in ``text``,
    searching from ``cursor``: by its first and last characters, as joining changed the gaps."""
    head, tail = piece[:48].strip(), piece[-48:].strip()
    start = text.find(head, cursor) if head else -1
    start = cursor if start < 0 else start
    end = text.find(tail, start) if tail else -1
    end = start + len(piece) if end < 0 else end + len(tail)
    return start, min(max(end, start + 1), len(text))


def _page_at(page_starts: Sequence[int], offset: int) -> int:
    return max(1, bisect.bisect_right(page_starts, offset))


def split_into_parts(tokenizer: SummaryTokenizer, documents: Sequence[Document], budget: int) -> tuple[Part, ...]:
    """Every document cut into parts of at most ``budget`` text tokens (documents never share a part)."""
    packer = _Packer(tokenizer)
    parts: list[Part] = []
    for doc_index, document in enumerate(documents):
        blocks = split_blocks(document.text)
        counts: list[int] = []
        for start in range(0, len(blocks), _COUNT_BATCH):
            counts += packer.counter.count_many(blocks[start:start + _COUNT_BATCH])
        current = ""  # the heading in force where the next part starts
        cursor = 0  # where in the document text the next part starts
        for text, tokens in packer.pack(list(zip(blocks, counts)), budget, "\n\n", heading_aware=True):
            inside = [h for h in (_markdown_heading(b) for b in split_blocks(text)) if h]
            starts_with_heading = bool(inside) and _markdown_heading(split_blocks(text)[0]) == inside[0]
            sections = tuple(([] if starts_with_heading or not current else [current]) + inside)
            pages = None
            if document.page_starts:
                start, cursor = _text_span(document.text, text, cursor)
                pages = (_page_at(document.page_starts, start), _page_at(document.page_starts, cursor - 1))
            parts.append(Part(len(parts) + 1, doc_index, text, tokens, sections, pages))
            current = inside[-1] if inside else current
    return tuple(parts)
