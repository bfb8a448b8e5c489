"""Test documents built on the spot: PDFs (with text, scanned-looking, encrypted), DOCX files.

``write_pdf`` is a small, standard-conforming writer (catalog, page tree, Helvetica text in
WinAnsi encoding, a correct xref table). The real-world-like PDFs further down (embedded
TrueType fonts with ligatures, columns, running headers, scanned pages, a garbled character map,
AES-256) are written with reportlab and qpdf, tools the app never reads with; poppler's
pdftotext is the independent reference they are compared with.
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


# --- real-world-like PDFs, written with reportlab (a producer the app never reads with) -----

DEJAVU_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/Library/Fonts")
CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf", "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
)


def find_font(names: Sequence[str], dirs: Sequence[str] = DEJAVU_DIRS) -> Path | None:
    for directory in dirs:
        for name in names:
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate
    return None


def _reportlab_font(alias: str, path: Path) -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    if alias not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont(alias, str(path)))
    return alias


# A journal-style article: ligature code points in the text (as TeX-made PDFs map their fi/fl
# glyphs), French accents, hyphenated line ends (one a real compound before a capital), a soft
# hyphen, and the same running header and "Page n of N" footer on every page.
ARTICLE_HEADER = "Harbour Review \u00b7 Studies in Coastal Logistics"
ARTICLE_LINES = (
    ("The \ufb01rst \ufb02eet of the harbour was measured with great care, and the",
     "o\ufb03cial \ufb01gures were then shared with every infor-",
     "mation desk along the coast. A well-known result: the North-",
     "East wing handled twice the cargo of the older docks.",
     "Fran\u00e7ois \u00e9crit que la r\u00e9gion a d\u00e9j\u00e0 chang\u00e9 ; les \u00e9l\u00e8ves",
     "du lyc\u00e9e \u00e9tudient l'\u00e9conomie maritime depuis l'\u00e9t\u00e9.",
     "Each pa\u00adragraph ends with the ledger of page {page}, kept for the archive."),
)


def write_article_pdf(dst: Path, *, page_count: int = 6) -> Path:
    """A multi-page article set in DejaVu Sans (real TrueType, embedded and subset)."""
    from reportlab.pdfgen import canvas

    font_path = find_font(("DejaVuSans.ttf",))
    if font_path is None:
        raise FileNotFoundError("DejaVuSans.ttf")
    font = _reportlab_font("DejaVuSans", font_path)
    pdf = canvas.Canvas(str(dst), pagesize=(612, 792))
    for page in range(1, page_count + 1):
        pdf.setFont(font, 9)
        pdf.drawString(56, 750, ARTICLE_HEADER)
        text = pdf.beginText(56, 700)
        text.setFont(font, 11)
        text.setLeading(15)
        text.textLine(sample_paragraph(page, words=9))
        for line in ARTICLE_LINES[0]:
            text.textLine(line.format(page=page))
        text.textLine(sample_paragraph(page + 100, words=9))
        pdf.drawText(text)
        pdf.setFont(font, 9)
        pdf.drawString(270, 40, f"Page {page} of {page_count}")
        pdf.showPage()
    pdf.save()
    return dst


def write_columns_pdf(dst: Path, columns: Sequence[Sequence[str]]) -> Path:
    """One page with the columns side by side, each written top to bottom (as layout programs do)."""
    from reportlab.pdfgen import canvas

    font = _reportlab_font("DejaVuSans", find_font(("DejaVuSans.ttf",)) or Path("DejaVuSans.ttf"))
    pdf = canvas.Canvas(str(dst), pagesize=(612, 792))
    width = (612 - 2 * 50) / len(columns)
    for index, lines in enumerate(columns):
        text = pdf.beginText(50 + index * width, 740)
        text.setFont(font, 9)
        text.setLeading(12)
        for line in lines:
            text.textLine(line)
        pdf.drawText(text)
    pdf.showPage()
    pdf.save()
    return dst


def write_text_and_scan_pdf(dst: Path, *, text_pages: Sequence[int], page_count: int) -> Path:
    """Pages listed in ``text_pages`` (1-based) carry text; the others only a PNG picture of
    a printed page, like a scanner's output."""
    from PIL import Image, ImageDraw
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    picture = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(picture)
    for row in range(40, 760, 18):
        draw.line([(40, row), (560 - (row * 7) % 120, row)], fill=30, width=6)
    pdf = canvas.Canvas(str(dst), pagesize=(612, 792))
    for page in range(1, page_count + 1):
        if page in text_pages:
            text = pdf.beginText(56, 740)
            text.setFont("Helvetica", 11)
            for k in range(4):
                text.textLine(sample_paragraph(page * 10 + k, words=12))
            pdf.drawText(text)
        else:
            pdf.drawImage(ImageReader(picture), 6, 0, width=600, height=792)
        pdf.showPage()
    pdf.save()
    return dst


def _shift_to_unicode(pdf_bytes: bytes) -> bytes:
    """Rewrites every ToUnicode entry ``<code> <UUUU>`` to point 31 code points lower, keeping
    each entry's length (so the xref stays right): the glyph-number layer real PDFs have when a
    subset font's map is wrong ("Computer Science" -> "$PNQVUFS4DJFODF"). The space glyph maps
    to a control character, which extractors drop, as in those files."""
    import re

    def shift(match: re.Match[bytes]) -> bytes:
        value = int(match.group(2), 16)
        value = value - 31 if value >= 0x41 else (0x01 if value == 0x20 else value)
        return match.group(1) + b"<%04X>" % value

    return re.sub(rb"(<[0-9A-Fa-f]{2,4}> )<([0-9A-Fa-f]{4})>", shift, pdf_bytes)


def write_garbled_pdf(dst: Path, *, good_pages: int = 2, garbled_pages: int = 3) -> Path:
    """``good_pages`` readable pages followed by ``garbled_pages`` whose font's ToUnicode map is
    shifted: the text layer exists and is wrong, which every extractor reports as text."""
    from pypdf import PdfReader, PdfWriter
    from reportlab.pdfgen import canvas

    def pages(path: Path, first: int, count: int, *, font_file: str) -> Path:
        font = _reportlab_font(font_file.removesuffix(".ttf"), find_font((font_file,)) or Path(font_file))
        pdf = canvas.Canvas(str(path), pagesize=(612, 792), pageCompression=0)
        for page in range(first, first + count):
            text = pdf.beginText(56, 740)
            text.setFont(font, 11)
            text.textLine(f"Computer Science Department, annual report, page {page}.")
            for k in range(6):
                text.textLine(sample_paragraph(page * 10 + k, words=11).capitalize())
            pdf.drawText(text)
            pdf.showPage()
        pdf.save()
        return path

    good = pages(dst.with_name(dst.stem + "-good.pdf"), 1, good_pages, font_file="DejaVuSans.ttf")
    bad = pages(dst.with_name(dst.stem + "-bad.pdf"), good_pages + 1, garbled_pages, font_file="DejaVuSerif.ttf")
    bad.write_bytes(_shift_to_unicode(bad.read_bytes()))
    writer = PdfWriter()
    for part in (good, bad):
        writer.append(PdfReader(part))
    with open(dst, "wb") as handle:
        writer.write(handle)
    good.unlink()
    bad.unlink()
    return dst


def write_cjk_pdf(dst: Path, font_path: Path, lines: Sequence[str]) -> Path:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    if "CJK" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(TTFont("CJK", str(font_path), subfontIndex=0))
    pdf = canvas.Canvas(str(dst), pagesize=(612, 792))
    text = pdf.beginText(56, 740)
    text.setFont("CJK", 12)
    for line in lines:
        text.textLine(line)
    pdf.drawText(text)
    pdf.showPage()
    pdf.save()
    return dst


def qpdf_encrypt(src: Path, dst: Path, *, user_password: str, owner_password: str = "owner-secret") -> Path:
    """AES-256 encryption by qpdf (an empty user password: opens without one, as restricted
    PDFs from banks and publishers do)."""
    import subprocess

    subprocess.run(["qpdf", "--encrypt", user_password, owner_password, "256", "--print=none",
                    "--modify=none", "--", str(src), str(dst)], check=True, capture_output=True)
    return dst


def pdftotext(path: Path) -> str:
    """Poppler's reading of a PDF: the independent reference for similarity tests."""
    import subprocess

    result = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], check=True,
                            capture_output=True)
    return result.stdout.decode("utf-8")
