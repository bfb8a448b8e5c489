"""Bytes to text: byte-order marks, UTF-16 without one, UTF-8, a page's declared charset, then
detection leaning to Windows-1252; and telling text from binary by a sample."""

from __future__ import annotations

import codecs
import re
from typing import TYPE_CHECKING, Optional

from mlx_backend.errors import DocumentError

if TYPE_CHECKING:
    from charset_normalizer import CharsetMatch

# Bytes looked at to tell text from binary: enough to be sure, cheap on a 200 MB log.
SNIFF_BYTES = 64 * 1024

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Control characters that never appear in real text (tab, newlines, form feed and escape do).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def looks_binary(sample: bytes) -> bool:
    if any(sample.startswith(bom) for bom, _ in _BOMS):
        return False
    if b"\x00" in sample:
        return _utf16_without_bom(sample) is None
    try:
        # A multi-byte character may be cut at the sample's end: ignore only that tail.
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(sample) - 3:
            text = sample[: error.start].decode("utf-8")
        else:
            best = _charset_best(sample)
            if best is None:
                return True
            text = str(best)
    return len(_CONTROL_CHARS.findall(text[:SNIFF_BYTES])) > max(2, len(text[:SNIFF_BYTES]) // 200)


def _utf16_without_bom(sample: bytes) -> Optional[str]:
    """"utf-16-le"/"utf-16-be" for UTF-16 text that has no byte-order mark (Windows tools write
    it): its ASCII characters put a zero in every other byte, always the same half; binary
    data scatters zeros over both. The guess must then decode to text with no control codes."""
    sample = sample[: len(sample) // 2 * 2]
    if len(sample) < 8:
        return None
    even, odd = sample[0::2], sample[1::2]
    zeros_even, zeros_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if zeros_odd >= 0.1 and zeros_even <= 0.01:
        encoding = "utf-16-le"
    elif zeros_even >= 0.1 and zeros_odd <= 0.01:
        encoding = "utf-16-be"
    else:
        return None
    try:
        text = sample.decode(encoding)
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # only a surrogate pair cut at the sample's end is fine
            return None
        text = sample[: error.start].decode(encoding)
    controls = len(_CONTROL_CHARS.findall(text)) + text.count("\x00")
    return encoding if controls <= len(text) // 200 else None


# Single-byte encodings are often indistinguishable on short or accent-light text, and the
# detector then picks any code page that decodes the bytes (cp437 for curly quotes, cp1006 for
# "Café"). Windows-1252 (a superset of Latin-1's letters) is by far the most common legacy
# encoding of Western text, so it wins whenever its reading is plausible Western text, unless
# the detector recognises its own reading's language clearly better.
_PREFERRED_LEGACY = "cp1252"
_LEGACY_EVIDENCE = 0.2
# Non-ASCII characters Western text has: Latin-1 and cp1252 letters, typographic punctuation,
# currency, units. (Box drawing, Arabic, Greek letters from a DOS code page are not.)
_WESTERN_SYMBOLS = frozenset("\u00a0“”‘’‚„–—…•€£¥¢©®°±·«»¿¡§¶™†‡‰²³¹½¼¾×÷µ´¨¸¯¬¦¤ˆ˜\u00ad")
# Between two letters only these make sense ("l’été", "l·l", "a–b"); "Za¿ó³æ" (Polish read
# as cp1252) has others.
_INNER_SYMBOLS = frozenset("’‘·–—\u00ad")


def _western(data: bytes) -> Optional[str]:
    """The bytes read as Windows-1252 if that reads as Western text, else None."""
    try:
        text = data.decode(_PREFERRED_LEGACY)
    except UnicodeDecodeError:
        return None  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: not cp1252
    letters = foreign_letters = odd = 0
    for index, char in enumerate(text):
        if char.isalpha():
            letters += 1
            if ord(char) >= 0x80:
                foreign_letters += 1
        elif ord(char) >= 0x80:
            if char not in _WESTERN_SYMBOLS:
                return None
            if (char not in _INNER_SYMBOLS and 0 < index < len(text) - 1
                    and text[index - 1].isalpha() and text[index + 1].isalpha()):
                odd += 1
    # Accented letters are a minority in every Western language; Cyrillic or Greek bytes read
    # as cp1252 are all accented letters ("Ïðèâåò").
    if letters and foreign_letters / letters > 0.4:
        return None
    if odd > max(1, foreign_letters // 50) or not _fits_one_language(text):
        return None
    return text


# The accented letters of Western languages cp1252 serves. Central European text read as
# cp1252 mixes letters no one language has: Czech "Pøíliš žluouèký" (ø, š, è together),
# Hungarian "tûrõ tükör" (û, õ, ö together).
_WESTERN_ALPHABETS = (
    "éèêëàâæçîïôœùûüÿ",  # French
    "äöüßé",  # German
    "æøåäöéáíóúýþð",  # Danish, Norwegian, Swedish, Finnish, Icelandic
    "áéíóúñü",  # Spanish
    "áâãàçéêíóôõúü",  # Portuguese
    "àèéìíòóùî",  # Italian
    "àèéíïòóúüç",  # Catalan
    "éëïöüèáó",  # Dutch, Afrikaans
    "õäöüšž",  # Estonian
)


def _fits_one_language(text: str) -> bool:
    accented = [c for c in text.lower() if c.isalpha() and ord(c) >= 0x80]
    if len(accented) < 3:
        return True
    fit = max(sum(1 for c in accented if c in alphabet) for alphabet in _WESTERN_ALPHABETS)
    return fit >= 0.9 * len(accented)


def _charset_best(data: bytes) -> Optional[CharsetMatch]:
    from charset_normalizer import from_bytes  # imported lazily: only non-UTF-8 files need it

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None

    def western_match() -> Optional[CharsetMatch]:
        found = next((match for match in matches if match.encoding == _PREFERRED_LEGACY), None)
        return found or from_bytes(data, cp_isolation=[_PREFERRED_LEGACY]).best()

    if _PREFERRED_LEGACY in best.could_be_from_charset:
        return western_match() or best  # the same reading: called by its common name
    western_text = _western(data)
    if western_text is None:
        return best
    western = western_match()
    if western is None:
        return best
    if (str(best) != western_text and best.coherence - western.coherence >= _LEGACY_EVIDENCE
            and best.chaos <= western.chaos):
        return best
    return western


def decode_text(data: bytes, name: str, *, html: bool = False) -> tuple[str, str]:
    """Bytes to text: BOM, then UTF-8, then (HTML) the page's declared charset, then detection."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    utf16 = _utf16_without_bom(data[:SNIFF_BYTES])
    if utf16 is not None:
        try:
            return data.decode(utf16), utf16
        except UnicodeDecodeError:
            pass
    if looks_binary(data[:SNIFF_BYTES]):
        raise DocumentError(f"{name} looks like a binary file, not text.")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if html:
        declared = _META_CHARSET.search(data[:4096])
        if declared:
            encoding = declared.group(1).decode("ascii", "replace")
            try:
                return data.decode(encoding), codecs.lookup(encoding).name
            except (LookupError, UnicodeDecodeError):
                pass  # a wrong declaration is common; fall back to detection
    best = _charset_best(data)
    if best is None:
        raise DocumentError(f"{name} looks like a binary file, not text.")
    return str(best), best.encoding


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
