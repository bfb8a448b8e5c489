"""The text layer of a PDF (pypdf); locked and image-only PDFs are refused with the way out."""

from __future__ import annotations

from pathlib import Path

from mlx_backend.documents.decoding import normalize_newlines
from mlx_backend.errors import DocumentError


def read_pdf(path: Path) -> tuple[str, int]:
    """The text of every page (pages apart by a blank line) and the page count."""
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    name = path.name
    with open(path, "rb") as handle:
        if not handle.read(1024).lstrip().startswith(b"%PDF"):
            raise DocumentError(f"{name} isn't a valid PDF file.")
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many PDFs carry only an owner password (printing/copy restrictions) and open
            # with the empty user password; anything else really is locked.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError, PyPdfError):
                opened = 0
            if not opened:
                raise DocumentError(
                    f"{name} is password-protected. Open it in Preview, export an unprotected "
                    "copy, and drop that instead."
                )
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as error:
        raise DocumentError(f"{name} isn't a readable PDF ({type(error).__name__}).") from None
    if not pages:
        raise DocumentError(f"{name} has no pages.")
    text = "\n\n".join(normalize_newlines(page).strip() for page in pages if page.strip())
    if not text.strip():
        raise DocumentError(
            f"{name} has no text layer ({_plural(len(pages), 'page')} of images, probably a scan). "
            "Run text recognition (OCR) on it first, for example in Preview or Acrobat."
        )
    return text, len(pages)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
