"""The readable text of an HTML page: headings as Markdown, paragraphs, lists and table rows
kept apart; navigation, scripts and styles left out. Only text is read; no link or image is
ever followed or fetched.

Pages as people have them are often malformed; handled the way browsers do: a missing
</head> ends at the first body content, an unclosed comment runs to the end of the page, an
unclosed <nav> ends where the main content starts. The parser keeps no recursion, so any
nesting depth is fine."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Optional

_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "title", "svg", "canvas",
                           "iframe", "object", "button", "select", "textarea"})
# Site chrome, not the page's text: menus and what the page itself hides.
_CHROME_TAGS = frozenset({"nav"})
# Where the page's own content starts: a <nav> still open there was never closed.
_CONTENT_STARTS = frozenset({"main", "article", "h1"})
# What may sit in <head>; any other tag (or text) starts the body, as in a browser.
_HEAD_CONTENT = frozenset({"title", "meta", "link", "style", "script", "noscript", "base", "template"})
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

    def __init__(self, *, skip_chrome: bool = True) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip_chrome = skip_chrome
        # Open elements whose text is left out (innermost last); chrome ones marked "~".
        self._skipping: list[str] = []
        self._in_head = False
        self.chrome_skipped = False
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

    @property
    def _skip_depth(self) -> int:
        return len(self._skipping)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        if tag == "head":
            self._in_head = True
            return
        if self._in_head and tag not in _HEAD_CONTENT:
            self._in_head = False  # </head> left out: the body starts here
        if tag in _CONTENT_STARTS and any(name.startswith("~") for name in self._skipping):
            self._skipping = [name for name in self._skipping if not name.startswith("~")]
        if tag in _SKIPPED_TAGS and tag not in _VOID_TAGS:
            self._skipping.append(tag)
            return
        if self._skip_chrome and tag not in _VOID_TAGS and self._is_chrome(tag, attrs):
            self._skipping.append("~" + tag)
            self.chrome_skipped = True
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

    @staticmethod
    def _is_chrome(tag: str, attrs: list[tuple[str, Optional[str]]]) -> bool:
        values = {name: (value or "").strip().lower() for name, value in attrs}
        return (tag in _CHROME_TAGS or values.get("role") == "navigation" or "hidden" in values
                or values.get("aria-hidden") == "true")

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
            return
        for index in range(len(self._skipping) - 1, -1, -1):
            if self._skipping[index].lstrip("~") == tag:
                del self._skipping[index:]  # what it enclosed and left open closes with it
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
        if self._in_head:
            if not data.strip():
                return
            self._in_head = False  # text in <head> means the body started without a tag
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
    """Readable text of an HTML page (navigation, scripts and styles dropped, structure kept
    as Markdown). A page that is all navigation keeps it rather than read as empty."""
    text, chrome_skipped = _read(html, skip_chrome=True)
    if not text and chrome_skipped:
        text, _ = _read(html, skip_chrome=False)
    return text


def _read(html: str, *, skip_chrome: bool) -> tuple[str, bool]:
    parser = _ReadableText(skip_chrome=skip_chrome)
    parser.feed(html)
    # html.parser gives back an unclosed "<!-- ..." (or "<!DOCTYPE") at the end as text; a
    # browser reads the rest of the page as that comment and shows none of it.
    pending = parser.rawdata.find("<!")
    if pending >= 0 and "<" not in parser.rawdata[:pending]:
        parser.rawdata = parser.rawdata[:pending]
    parser.close()
    return parser.text(), parser.chrome_skipped
