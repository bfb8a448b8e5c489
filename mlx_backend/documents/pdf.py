"""The text layer of a PDF (pdfium, through pypdfium2), tidied by ``cleanup``.

Pages with no text (scans) or a garbled one (fonts without a usable character map) are left
out and named in the document's notes; a PDF with no readable page, a locked one and a
damaged one are refused with one plain sentence.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from mlx_backend.documents.cleanup import clean_page_text, drop_repeated_edges, is_unreadable, page_ranges
from mlx_backend.errors import DocumentError

# pdfium is not thread-safe: documents are read one at a time whichever thread asks.
_PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True)
class PdfText:
    text: str  # the readable pages, apart by a blank line
    pages: int  # every page of the file, read or not
    notes: tuple[str, ...] = ()
    # Where each page of the file starts in ``text`` (a page left out starts where the next
    # does), so a summary can say which pages a point comes from.
    page_starts: tuple[int, ...] = ()


def read_pdf(path: Path) -> PdfText:
    name = path.name
    try:
        with open(path, "rb") as handle:
            head = handle.read(1024)
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 2048))
            tail = handle.read()
    except OSError as error:
        raise DocumentError(f"{name}: the file can't be opened ({error.strerror or error}).") from None
    if b"%PDF" not in head:
        raise DocumentError(f"{name} isn't a valid PDF file.")
    with _PDFIUM_LOCK:
        texts, scanned, garbled, broken = _read_pages(path, name)
    notes = []
    if b"%%EOF" not in tail:
        notes.append("The file seems cut short (an incomplete download?); only what could be read is here.")
    if scanned:
        notes.append(
            f"{_pages_phrase(scanned)} no text layer (scanned images); left out. "
            "Run text recognition (OCR) on the file to include them.")
    if broken:
        notes.append(f"{_pages_phrase(broken, have='are')} damaged and couldn't be read; left out.")
    if garbled:
        notes.append(
            f"{_pages_phrase(garbled)} text that can't be decoded (fonts without a usable "
            "character map); left out.")
    kept = iter(drop_repeated_edges([text for text in texts if text]))
    pages = [next(kept) if text else "" for text in texts]
    text = "\n\n".join(page for page in pages if page)
    page_starts, offset = [], 0
    for page in pages:
        page_starts.append(offset)
        if page:
            offset += len(page) + 2
    if not text:
        count = len(texts)
        if broken and not scanned and not garbled:
            raise DocumentError(f"{name} isn't a readable PDF (it's damaged or incomplete).")
        if garbled and not scanned:
            raise DocumentError(
                f"{name}'s text can't be decoded (its fonts have no usable character map), so "
                "it would read as gibberish. Run text recognition (OCR) on it first.")
        if garbled:
            raise DocumentError(
                f"{name} has no readable text (scanned pages and fonts that can't be decoded). "
                "Run text recognition (OCR) on it first.")
        raise DocumentError(
            f"{name} has no text layer ({_plural(count, 'page')} of images, probably a scan). "
            "Run text recognition (OCR) on it first, for example in Preview or Acrobat."
        )
    return PdfText(text, len(texts), tuple(notes), tuple(min(start, len(text)) for start in page_starts))


def _read_pages(path: Path, name: str) -> tuple[list[str], list[int], list[int], list[int]]:
    """Each page's cleaned text ("" where left out) and the 1-based numbers of the scanned,
    the garbled and the damaged pages."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        document = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as error:
        if error.err_code == pdfium_c.FPDF_ERR_PASSWORD:
            raise DocumentError(
                f"{name} is password-protected. Open it in Preview, export an unprotected "
                "copy, and drop that instead."
            ) from None
        if error.err_code == pdfium_c.FPDF_ERR_SECURITY:
            raise DocumentError(f"{name} is encrypted in a way Qwen Desk can't open.") from None
        raise DocumentError(f"{name} isn't a readable PDF (it's damaged or incomplete).") from None
    except OSError as error:
        raise DocumentError(f"{name}: the file can't be opened ({error.strerror or error}).") from None
    texts: list[str] = []
    scanned: list[int] = []
    garbled: list[int] = []
    broken: list[int] = []
    try:
        for index in range(len(document)):
            try:
                page = document[index]
                raw_text = page.get_textpage().get_text_bounded()
                has_images = raw_text.strip() == "" and any(
                    obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE for obj in page.get_objects(max_depth=2))
            except (RuntimeError, ValueError, OSError):  # PdfiumError is a RuntimeError
                broken.append(index + 1)
                texts.append("")
                continue
            text = clean_page_text(raw_text)
            if not text:
                if has_images:
                    scanned.append(index + 1)
                # A page with neither text nor images is blank on purpose: nothing to say.
            elif is_unreadable(text):
                garbled.append(index + 1)
                text = ""
            texts.append(text)
    finally:
        document.close()
    if not texts:
        raise DocumentError(f"{name} has no pages.")
    if not any(texts) and not scanned and not garbled and not broken:
        scanned = list(range(1, len(texts) + 1))  # drawn, not written: a scan in vector form
    return texts, scanned, garbled, broken


def _pages_phrase(numbers: list[int], *, have: str = "have") -> str:
    if len(numbers) == 1:
        return f"Page {numbers[0]} {'has' if have == 'have' else 'is'}"
    return f"Pages {page_ranges(numbers)} {have}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
