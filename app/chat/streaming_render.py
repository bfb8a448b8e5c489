"""Render a streaming Markdown answer at a cost that does not grow with its length.

Re-rendering the whole answer on every update makes a long answer slower and slower to stream
(the work per update grows with the text, so the total grows with its square). Instead the
answer is cut, as it streams, into *sealed* chunks of whole Markdown blocks (at least
``SEAL_CHARS`` each), and each sealed chunk is rendered once, into a view of its own. Only the
open chunk (the text after the last seal: under ``SEAL_CHARS`` plus the block being written) is
rendered again on each update.

A cut is made only at a block boundary that cannot change how either side renders much: a
blank line followed by a line that starts in the first column, outside a code fence. A long
code block is cut at a line end: the sealed part gets a closing fence, the open part starts with
the same opening fence. While streaming, two neighbouring chunks can differ in small ways from
one rendering of the whole (a loose list's spacing, the gap between chunks); the message view
renders the complete answer once when the stream ends, exactly as a stored message renders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from PySide6.QtWidgets import QVBoxLayout, QWidget

from app.chat.rendering import RenderColors, SafeTextView

SEAL_CHARS = 800
# An opening or closing code fence: up to three spaces, then ``` or ~~~ (at least three).
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class Chunk:
    """``text[start:end]`` wrapped in ``prefix``/``suffix`` (a code fence split across chunks)."""

    start: int
    end: int
    prefix: str = ""
    suffix: str = ""

    def markdown(self, text: str) -> str:
        return self.prefix + text[self.start : self.end] + self.suffix


class ChunkSplitter:
    """Finds seal points in a growing text, reading each complete line once."""

    def __init__(self, seal_chars: int = SEAL_CHARS) -> None:
        self.seal_chars = seal_chars
        self._scan = 0  # start of the first line not read yet
        self._open_start = 0  # where the open chunk starts
        self._open_prefix = ""
        self._fence: Optional[tuple[str, str]] = None  # (marker, opening line) while inside one
        self._after_blank = False

    @property
    def open_chunk_start(self) -> tuple[int, str]:
        return self._open_start, self._open_prefix

    def feed(self, text: str) -> list[Chunk]:
        """Chunks sealed by the complete lines of ``text`` not read before (``text`` only grows)."""
        sealed: list[Chunk] = []
        while True:
            newline = text.find("\n", self._scan)
            if newline < 0:
                return sealed
            line_start, line_end = self._scan, newline + 1
            line = text[line_start:newline]
            self._scan = line_end
            size = line_start - self._open_start
            if self._fence is not None:
                marker, opening = self._fence
                match = _FENCE.match(line)
                if match and _closes(match.group(1), marker, line):
                    self._fence = None
                    self._after_blank = False
                elif size >= self.seal_chars:
                    # A long code block: seal it up to here, closed; reopen it in the next chunk.
                    sealed.append(Chunk(self._open_start, line_start, self._open_prefix, marker + "\n"))
                    self._open_start, self._open_prefix = line_start, opening + "\n"
                continue
            blank = not line.strip()
            if not blank and self._after_blank and not line[0].isspace() and size >= self.seal_chars:
                sealed.append(Chunk(self._open_start, line_start, self._open_prefix))
                self._open_start, self._open_prefix = line_start, ""
            match = _FENCE.match(line)
            if match:
                self._fence = (match.group(1), line)
            self._after_blank = blank


def _closes(run: str, marker: str, line: str) -> bool:
    """A closing fence: the same character, at least as long, nothing after it."""
    return run[0] == marker[0] and len(run) >= len(marker) and not line.strip()[len(run):].strip()


class StreamingMarkdown(QWidget):
    """The views of a streaming answer: one per sealed chunk, and the open one at the bottom."""

    def __init__(self, colors: RenderColors, parent: Optional[QWidget] = None, seal_chars: int = SEAL_CHARS) -> None:
        super().__init__(parent)
        self._colors = colors
        self._splitter = ChunkSplitter(seal_chars)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(0)
        self.sealed_views: list[SafeTextView] = []
        self.open_view = SafeTextView(self)
        self._layout.addWidget(self.open_view)
        self.rendered_chars: list[int] = []  # Markdown characters rendered by each update (tests, bench)

    def set_colors(self, colors: RenderColors) -> None:
        self._colors = colors

    def update_text(self, text: str) -> None:
        """Show ``text`` (the answer so far: it only ever grows)."""
        rendered = 0
        for chunk in self._splitter.feed(text):
            view = SafeTextView(self)
            markdown = chunk.markdown(text)
            view.set_markdown(markdown, self._colors)
            rendered += len(markdown)
            self._layout.insertWidget(len(self.sealed_views), view)
            self.sealed_views.append(view)
        start, prefix = self._splitter.open_chunk_start
        tail = prefix + text[start:]
        self.open_view.set_markdown(tail, self._colors)
        rendered += len(tail)
        self.rendered_chars.append(rendered)

    @property
    def views(self) -> list[SafeTextView]:
        return [*self.sealed_views, self.open_view]
