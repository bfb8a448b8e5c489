"""Tidying the text a PDF's text layer gives: hyphenation, ligatures, control characters, the
header and footer printed on every page, and telling a page of real text from a garbled one.

Pure functions on strings, so each rule is tested on its own (tests/test_documents_pdf.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Sequence

# pdfium marks a hyphen it judged to be a line-end break with \x02 and has already joined the
# two lines; U+FFFE is the same mark from its UCS-2 API.
_PDFIUM_HYPHEN = re.compile(r"[\x02\ufffe]\n?(?=(.?))")
# A hyphen (or soft hyphen) ending a line inside a word, the next line starting in lowercase:
# "infor-\nmation". Before an uppercase letter or a digit it is a real compound ("North-\nEast").
_LINE_END_HYPHEN = re.compile(r"([^\W\d_])[-\u00ad\u2010]\n[ \t]*(?=[^\W\d_])")
# Control characters never meant as text (tab and newline are kept), the C1 range, and the
# noncharacters some extractors emit for unmapped glyphs.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff\ufffd]")
_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f]")

# Compatibility forms are normalized only where the result is the same text: ligatures
# (U+FB00-FB4F: "ﬁ" -> "fi", Hebrew/Armenian presentation forms) and Arabic presentation
# forms (positional glyph variants a PDF's font may map to; the base letters are the text).
# A blanket NFKC would also rewrite what carries meaning or typography: "x²" -> "x2",
# "H₂O" -> "H2O", "½" -> "1⁄2", "™" -> "TM", "①" -> "1", and CJK full-width punctuation
# ("，。！" -> ",.!") and half-width katakana, which Chinese and Japanese text uses on purpose.
_COMPATIBILITY_RANGES = re.compile(r"[\ufb00-\ufb4f\ufb50-\ufdff\ufe70-\ufeff]+")


def _nfkc(match: re.Match[str]) -> str:
    return unicodedata.normalize("NFKC", match.group(0))


def _pdfium_hyphen(match: re.Match[str]) -> str:
    following = match.group(1)
    # Before an uppercase letter or a digit the hyphen is part of the text ("North-East").
    return "-" if following and (following.isupper() or following.isdigit()) else ""


def clean_page_text(text: str) -> str:
    """One page's text as an extractor gave it, made plain: newlines, hyphenation joined,
    ligatures and presentation forms normalized, control characters dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _PDFIUM_HYPHEN.sub(_pdfium_hyphen, text)
    text = _LINE_END_HYPHEN.sub(lambda m: m.group(1) if _next_is_lower(m) else m.group(0), text)
    text = text.replace("\u00ad", "")  # a soft hyphen left inside a line is invisible
    text = _COMPATIBILITY_RANGES.sub(_nfkc, text)
    text = unicodedata.normalize("NFC", text)  # canonical only: "e" + U+0301 -> "é"
    text = _SPACES.sub(" ", text)
    text = text.replace("\f", "\n")
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _next_is_lower(match: re.Match[str]) -> bool:
    following = match.string[match.end():match.end() + 1]
    return following.islower()


# --- headers and footers ---------------------------------------------------------------------

# Lines looked at at the top and at the bottom of each page.
_EDGE_LINES = 2
_DIGITS = re.compile(r"\d+")


def _edge_key(line: str) -> str:
    # "Page 3 of 12" and "Page 4 of 12" are the same footer; a roman page number too ("xii").
    key = _DIGITS.sub("#", " ".join(line.split()).casefold())
    return "#" if re.fullmatch(r"[ivxlc]+", key) else key


def drop_repeated_edges(pages: Sequence[str]) -> list[str]:
    """Lines at the top or bottom of most pages (a running header, "Page 3 of 12") are kept
    where they first appear and dropped from every other page."""
    if len(pages) < 3:
        return list(pages)
    split = [page.split("\n") for page in pages]
    counts: Counter[str] = Counter()
    numbers: dict[str, list[tuple[int, ...]]] = {}
    for lines in split:
        seen = {}
        for line in _edge_candidates(lines):
            seen.setdefault(_edge_key(line), tuple(int(n) for n in _DIGITS.findall(line)))
        counts.update(seen.keys())
        for key, found in seen.items():
            numbers.setdefault(key, []).append(found)
    # A fixed line must be on most pages; one with a page number (a chapter's running header,
    # "Chapter 4: Function reference 12") on a fifth of them, at least three. A number that
    # doesn't count up page by page is content ("Subtotal: 1,204.00"), not a page number.
    needed = max(3, (len(pages) + 1) // 2)
    numbered = max(3, len(pages) // 5)
    repeated = {key for key, count in counts.items() if key.strip() and (
        (count >= needed and len(set(numbers[key])) == 1)  # fixed text, "Annual Report 2024" too
        or (count >= numbered and _counts_up(key, numbers[key])))}
    if not repeated:
        return list(pages)
    # A bare page number ("12") says nothing once out of its page: none is kept.
    kept: set[str] = {"#"}
    result = []
    for lines in split:
        edge = set(_edge_indices(lines))
        out = []
        for index, line in enumerate(lines):
            key = _edge_key(line)
            if index in edge and key in repeated:
                if key in kept:
                    continue
                kept.add(key)
            out.append(line)
        result.append("\n".join(out).strip())
    return result


def _counts_up(key: str, found: list[tuple[int, ...]]) -> bool:
    """Some number of the line rises from page to page, on nearly every step (numbering may
    restart once, after the front matter). A line of roman numerals only is a page number."""
    if key == "#":
        found = [numbers for numbers in found if numbers]  # arabic ones; roman ones have none
        if not found:
            return True
    if not all(found) or len(found) < 2:
        return False
    width = min(len(numbers) for numbers in found)
    steps = len(found) - 1
    return any(sum(a[i] < b[i] for a, b in zip(found, found[1:])) >= 0.8 * steps for i in range(width))


def _edge_indices(lines: list[str]) -> list[int]:
    filled = [index for index, line in enumerate(lines) if line.strip()]
    return filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]


def _edge_candidates(lines: list[str]) -> list[str]:
    return [lines[index] for index in _edge_indices(lines)]


# --- garbled text layers ---------------------------------------------------------------------

# Below this many letters a page says too little to judge; it is kept.
_MIN_JUDGED = 40


def is_unreadable(text: str) -> bool:
    """True when a page's text layer is not text: mostly private-use, replacement or control
    characters (fonts with no usable character map), or a layer of glyph numbers that looks
    like a shifted alphabet ("$PNQVUFS4DJFODF" for "Computer Science").

    Language-neutral: uncased scripts (Chinese, Japanese, Arabic, Hebrew, Thai, Devanagari...)
    are judged only by the first rule, so real text in them can never trip the others."""
    visible = [c for c in text if not c.isspace()]
    if len(visible) < _MIN_JUDGED // 2:
        return False
    bad = sum(1 for c in visible if unicodedata.category(c) in ("Co", "Cn", "Cs", "Cc", "Cf")
              or c in "\ufffd\ufffe\uffff")
    if bad / len(visible) >= 0.3:
        return True
    return _looks_like_shifted_glyphs(text)


def _looks_like_shifted_glyphs(text: str) -> bool:
    """A cased script (Latin, Greek, Cyrillic...) written by people has lowercase letters and
    words made of letters. A glyph-number layer turns lowercase into capitals and capitals into
    digits and punctuation glued inside the "words", and usually loses the spaces."""
    letters = [c for c in text if c.isalpha()]
    cased = [c for c in letters if c.isupper() or c.islower()]
    if len(cased) < _MIN_JUDGED or len(cased) < len(letters) / 2:
        return False  # little to judge, or mostly an uncased script with some Latin in it
    lower_share = sum(1 for c in cased if c.islower()) / len(cased)
    if lower_share >= 0.25:
        return False  # real prose, code and tables all have plenty of lowercase
    tokens = [token for token in text.split() if any(c.isupper() or c.islower() for c in token)]
    glued = sum(1 for token in tokens if _glued(token)) / len(tokens)
    mean_length = sum(len(token) for token in tokens) / len(tokens)
    # An all-capitals page written by people (a form, a legal notice) has words of letters at
    # ordinary lengths; it fails both of these.
    return glued >= 0.5 or mean_length >= 16


def _glued(token: str) -> bool:
    """Digits or symbols stuck to letters inside one token: "4DJFODF", "$PNQ", "VU%S"."""
    core = token.lstrip("\"'([{«“”‘’„¿¡").rstrip(".,;:!?\"')]}»“”‘’…")
    if not any(c.isalpha() for c in core):
        return False  # a number, a price, a bullet
    # Hyphens, apostrophes, periods, slashes and ampersands join real words ("don't", "U.S.",
    # "and/or", "R&D"); a digit or a symbol elsewhere, leading ones included, does not.
    return any(not c.isalpha() and c not in "-'’./&" and not (c.isdigit() and i == len(core) - 1)
               for i, c in enumerate(core))


def page_ranges(numbers: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> "3-5 and 9"; numbers are 1-based page numbers in order."""
    spans: list[list[int]] = []
    for number in numbers:
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in spans]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
