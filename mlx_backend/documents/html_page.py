"""The readable text of an HTML page: headings as Markdown, paragraphs, lists and table rows
kept apart. Only text is read; no link or image is ever followed or fetched."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Optional

_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "canvas",
                           "iframe", "object", "button", "select", "textarea"})
_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "blockquote",
    "ul", "ol", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "figure", "figcaption",
    "form", "fieldset", "address", "details", "summary", "hr", "body", "html",
})
_VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col",
                        "embed", "source", "track", "param"})


class _ReadableText(HTMLParser):
    """Collects an HTML page's visible text: headings as Markdown, paragraphs apart, lists and
    table rows on their own lines. Only text is read; no URL is ever followed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._cell_in_row = 0
        self._trailing_newlines = 0

    def _emit(self, text: str) -> None:
        self._out.append(text)
        stripped = text.rstrip("\n")
        self._trailing_newlines = (len(text) - len(stripped)) + (self._trailing_newlines if not stripped else 0)

    def _break(self, marker: str) -> None:
        # Breaks merge rather than add up: </li><li> is one line break, </p><p> one blank line.
        missing = len(marker) - self._trailing_newlines
        if missing > 0 and self._out:
            self._emit("\n" * missing)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._break("\n\n")
            self._emit("#" * int(tag[1]) + " ")
        elif tag == "li":
            self._break("\n")
            self._emit("- ")
        elif tag == "tr":
            self._break("\n")
            self._cell_in_row = 0
        elif tag in ("td", "th"):
            if self._cell_in_row:
                self._emit(" | ")
            self._cell_in_row += 1
        elif tag == "br":
            self._break("\n")
        elif tag == "pre":
            self._break("\n\n")
            self._pre_depth += 1
        elif tag in _BLOCK_TAGS:
            self._break("\n\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth or tag in _VOID_TAGS:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self._break("\n\n")
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in _BLOCK_TAGS:
            self._break("\n\n")
        elif tag in ("li", "tr"):
            self._break("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth or not data:
            return
        if self._pre_depth:
            self._emit(data.replace("\r\n", "\n"))
        else:
            text = re.sub(r"\s+", " ", data)
            if not self._out or self._out[-1][-1:].isspace():
                text = text.lstrip(" ")  # no indent from the source's line breaks
            if text:
                self._emit(text)

    def text(self) -> str:
        joined = "".join(self._out).replace("\xa0", " ")
        text = "\n".join(line.rstrip() for line in joined.split("\n"))
        # A heading marker left alone (an empty <h2>) is noise.
        text = re.sub(r"(?m)^#{1,6} *$", "", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        return text.strip()


def html_to_text(html: str) -> str:
    """Readable text of an HTML page (scripts and styles dropped, structure kept as Markdown)."""
    parser = _ReadableText()
    parser.feed(html)
    parser.close()
    return parser.text()
