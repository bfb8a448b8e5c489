"""Test documents built on the spot: PDFs (with text, scanned-looking, encrypted), DOCX files.

The PDF writer is a small, standard-conforming one (catalog, page tree, Helvetica text in
WinAnsi encoding, a correct xref table) so no PDF-producing dev dependency is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def sample_paragraph(index: int, words: int = 40) -> str:
    """Deterministic prose; every paragraph names its index so tests can find it again."""
    vocabulary = (
        "river", "harbour", "lantern", "orchard", "meadow", "engine", "signal", "market",
        "winter", "garden", "letter", "bridge", "compass", "ledger", "valley", "beacon",
    )
    body = " ".join(vocabulary[(index * 7 + n * 3) % len(vocabulary)] for n in range(words))
    return f"Paragraph {index}: the {body}."


def _pdf_string(text: str) -> bytes:
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _text_stream(lines: Sequence[str]) -> bytes:
    parts = [b"BT", b"/F1 10 Tf", b"12 TL", b"56 760 Td"]
    for line in lines:
        parts.append(_pdf_string(line) + b" Tj T*")
    parts.append(b"ET")
    return b"\n".join(parts)


def _drawing_stream() -> bytes:
    # What a scan looks like to a text extractor: marks on the page, no text operators.
    return b"0.5 g 56 56 480 700 re f 1 g 80 80 200 100 re f"


def write_pdf(dst: Path, pages: Sequence[Sequence[str]], *, scanned: bool = False) -> Path:
    """A PDF with one page per item of ``pages`` (each a list of text lines).

    With ``scanned=True`` the pages get only filled shapes: no text layer at all."""
    objects: list[bytes] = []  # object n is objects[n - 1]

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled once the page tree's number is known
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for lines in pages:
        stream = _drawing_stream() if scanned else _text_stream(lines)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(add(
            b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>" % (tree, font, content)
        ))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    kids = b" ".join(b"%d 0 R" % n for n in page_ids)
    objects[tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, catalog, xref)
    dst.write_bytes(bytes(out))
    return dst


def write_long_pdf(dst: Path, *, page_count: int = 100, paragraphs_per_page: int = 2) -> Path:
    """A ``page_count``-page text PDF; page n holds paragraphs numbered from n * per_page."""
    pages = []
    for page in range(page_count):
        lines = [f"Page {page + 1}"]
        for k in range(paragraphs_per_page):
            paragraph = sample_paragraph(page * paragraphs_per_page + k, words=24)
            words = paragraph.split()
            lines += [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        pages.append(lines)
    return write_pdf(dst, pages)


def write_encrypted_pdf(dst: Path, *, password: str = "secret") -> Path:
    """A text PDF locked with a user password (RC4, which pypdf writes without extra packages)."""
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(dst.with_name(dst.stem + "-plain.pdf"), [["Top secret plans."]])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    with open(dst, "wb") as handle:
        writer.write(handle)
    plain.unlink()
    return dst


def write_docx(dst: Path, *, paragraphs: int = 6) -> Path:
    """A Word file with a title, headings, body paragraphs, a bulleted list and a table."""
    import docx

    document = docx.Document()
    document.add_heading("Quarterly Report", level=0)
    document.add_heading("Summary", level=1)
    for index in range(paragraphs):
        document.add_paragraph(sample_paragraph(index, words=20))
    document.add_heading("Details", level=2)
    document.add_paragraph("First point", style="List Bullet")
    document.add_paragraph("Second point", style="List Bullet")
    table = document.add_table(rows=3, cols=3)
    for r, row in enumerate([("Region", "Sales", "Growth"), ("North", "120", "4%"), ("South", "95", "-2%")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Closing remarks after the table.")
    document.save(str(dst))
    return dst
