"""LaTeX in model output, kept character for character.

Markdown eats parts of LaTeX: ``\\,`` and ``\\(`` are escapes, ``_`` and ``*`` make emphasis.
Before the Markdown parser runs, every math span outside code is swapped for a placeholder of
plain letters and digits (which Markdown leaves alone); after it runs, the placeholders become
the original source again, in a math style. Recognised: inline ``$...$`` and ``\\(...\\)``,
display ``$$...$$`` and ``\\[...\\]``. A ``$`` counts as math only the way Pandoc counts it
(no space inside the delimiters, no digit right after the closing one), so "$5 and $10" stays
prose.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QTextBlockFormat, QTextCharFormat, QTextDocument, QTextFormat

# A char-format property that marks math runs (tests and copy code read it).
MATH_PROPERTY = QTextFormat.Property.UserProperty.value + 21
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True)
class MathSpan:
    source: str  # what the model wrote, delimiters included
    body: str  # between the delimiters: what is shown
    display: bool


def protect(markdown: str) -> tuple[str, dict[str, MathSpan]]:
    """``markdown`` with math swapped for placeholders, and what each placeholder stands for."""
    if "$" not in markdown and "\\(" not in markdown and "\\[" not in markdown:
        return markdown, {}
    nonce = secrets.token_hex(4)
    spans: dict[str, MathSpan] = {}
    out: list[str] = []
    segment: list[str] = []
    fence: str | None = None

    def flush() -> None:
        if segment:
            out.append(_protect_prose("".join(segment), nonce, spans))
            segment.clear()

    for line in markdown.splitlines(keepends=True):
        match = _FENCE.match(line)
        if fence is None and match:
            flush()
            fence = match.group(1)
            out.append(line)
        elif fence is not None:
            out.append(line)
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) and not line.strip()[len(match.group(1)):]:
                fence = None
        else:
            segment.append(line)
    flush()
    return "".join(out), spans


def _protect_prose(text: str, nonce: str, spans: dict[str, MathSpan]) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "`":  # an inline code span: copied as is, up to the matching run of backticks
            run = _run_length(text, i, "`")
            close = text.find("`" * run, i + run)
            while close != -1 and _run_length(text, close, "`") != run:
                close = text.find("`" * run, close + _run_length(text, close, "`"))
            if close == -1:
                out.append(text[i:i + run])
                i += run
            else:
                out.append(text[i:close + run])
                i = close + run
            continue
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "([":
                closer = "\\)" if nxt == "(" else "\\]"
                end = text.find(closer, i + 2)
                if end != -1:
                    out.append(_placeholder(text[i:end + 2], text[i + 2:end], nxt == "[", nonce, spans))
                    i = end + 2
                    continue
            out.append(text[i:i + 2])  # any other escape (``\$`` among them) stays Markdown's
            i += 2
            continue
        if ch == "$":
            if text.startswith("$$", i):
                end = text.find("$$", i + 2)
                if end != -1 and text[i + 2:end].strip():
                    out.append(_placeholder(text[i:end + 2], text[i + 2:end], True, nonce, spans))
                    i = end + 2
                    continue
            else:
                end = _inline_dollar_end(text, i)
                if end != -1:
                    out.append(_placeholder(text[i:end + 1], text[i + 1:end], False, nonce, spans))
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _run_length(text: str, start: int, ch: str) -> int:
    end = start
    while end < len(text) and text[end] == ch:
        end += 1
    return end - start


def _inline_dollar_end(text: str, start: int) -> int:
    """Where the ``$`` opened at ``start`` closes on the same line, or -1 (Pandoc's rules)."""
    if start + 1 >= len(text) or text[start + 1].isspace():
        return -1
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            return -1
        if ch == "\\":
            i += 2
            continue
        if ch == "$":
            if text[i - 1].isspace() or (i + 1 < len(text) and text[i + 1].isdigit()):
                return -1
            return i
        i += 1
    return -1


def _placeholder(source: str, body: str, display: bool, nonce: str, spans: dict[str, MathSpan]) -> str:
    key = f"QDMATH{nonce}N{len(spans)}X"
    spans[key] = MathSpan(source, body.strip() if display else body, display)
    return key


def math_format(mono: QFont, color) -> QTextCharFormat:
    """LaTeX source in a fixed-pitch face and its own colour: legible, and plainly not prose."""
    fmt = QTextCharFormat()
    fmt.setFont(mono, QTextCharFormat.FontPropertiesInheritanceBehavior.FontPropertiesSpecifiedOnly)
    fmt.setForeground(color)
    fmt.setProperty(MATH_PROPERTY, True)
    return fmt


def restore(document: QTextDocument, spans: dict[str, MathSpan], mono: QFont, color) -> None:
    """Put each span's source back where its placeholder landed, styled as math."""
    if not spans:
        return
    char_format = math_format(mono, color)
    for key, span in spans.items():
        cursor = document.find(key, 0, QTextDocument.FindFlag.FindCaseSensitively)
        while not cursor.isNull():
            block = cursor.block()
            alone = block.text().strip() == key
            fmt = QTextCharFormat(cursor.charFormat())
            fmt.merge(char_format)
            fmt.setToolTip(span.source)
            # Newlines in display math would split the paragraph: line separators keep it one.
            cursor.insertText(span.body.replace("\r\n", "\n").replace("\n", "\u2028"), fmt)
            if span.display and alone:
                centred = QTextBlockFormat()
                centred.setAlignment(Qt.AlignmentFlag.AlignHCenter)
                centred.setTopMargin(10)
                centred.setBottomMargin(10)
                cursor.mergeBlockFormat(centred)
            cursor = document.find(key, cursor.position(), QTextDocument.FindFlag.FindCaseSensitively)
