"""Bytes to text: byte-order marks, UTF-8, a page's declared charset, then detection; and
telling text from binary by a sample."""

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
        return True
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


# Single-byte encodings are often indistinguishable on short or accent-light text; where the
# detector finds Windows-1252 about as plausible as its favourite (cp1257 for French, say), the
# most common legacy encoding of Western text wins.
_PREFERRED_LEGACY = "cp1252"
_LEGACY_TOLERANCE = 0.1


def _charset_best(data: bytes) -> Optional[CharsetMatch]:
    from charset_normalizer import from_bytes  # imported lazily: only non-UTF-8 files need it

    matches = from_bytes(data)
    best = matches.best()
    if best is None or _PREFERRED_LEGACY in best.could_be_from_charset:
        return best
    for match in matches:
        if (match.encoding == _PREFERRED_LEGACY
                and match.chaos <= best.chaos + _LEGACY_TOLERANCE
                and match.coherence >= best.coherence - _LEGACY_TOLERANCE):
            return match
    return best


def decode_text(data: bytes, name: str, *, html: bool = False) -> tuple[str, str]:
    """Bytes to text: BOM, then UTF-8, then (HTML) the page's declared charset, then detection."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
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
