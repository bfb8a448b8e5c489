"""Text extraction from dropped documents, and a clear DocumentError for every bad input."""

from __future__ import annotations

import builtins
import socket
from pathlib import Path

import pytest

from mlx_backend.documents import reading as documents
from mlx_backend.documents.html_page import html_to_text
from mlx_backend.documents.reading import MAX_DOCUMENT_BYTES, read_document, read_documents
from mlx_backend.errors import DocumentError
from tests.support.documents import (
    sample_paragraph,
    write_docx,
    write_encrypted_pdf,
    write_long_pdf,
    write_pdf,
)

FRENCH = ("Les élèves sont allés à l'école près de la forêt. Très bien, déjà vu, naïve café "
          "crème brûlée. Où est la bibliothèque ? Ça coûte cher. Noël à Paris. ") * 4
RUSSIAN = "Привет, как дела? Это длинный русский текст для проверки кодировки. " * 4


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Reading documents never opens a connection (HTML links and images stay unfetched)."""

    def refuse(*args, **kwargs):
        raise AssertionError("document extraction tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- PDF -------------------------------------------------------------------------------------


def test_hundred_page_pdf_keeps_every_page_in_order(tmp_path: Path):
    document = read_document(write_long_pdf(tmp_path / "report.pdf", page_count=100))
    assert (document.name, document.kind, document.pages) == ("report.pdf", "pdf", 100)
    positions = [document.text.index(f"Paragraph {n}:") for n in (0, 1, 100, 198, 199)]
    assert positions == sorted(positions)
    # "Page n", the same line at the top of every page, is a running header: kept once.
    assert document.text.startswith("Page 1\n") and "Page 100" not in document.text
    assert document.tokens is None  # counted later, by the summary planner


def test_pdf_accents_and_pdf_string_escapes_survive(tmp_path: Path):
    path = write_pdf(tmp_path / "accents.pdf", [["Grüße aus Köln (café) \\ déjà vu"], ["Second page"]])
    document = read_document(path)
    assert document.pages == 2
    assert "Grüße aus Köln (café) \\ déjà vu" in document.text
    assert document.text.index("Köln") < document.text.index("Second page")


def test_password_protected_pdf_is_refused_clearly(tmp_path: Path):
    with pytest.raises(DocumentError, match=r"locked\.pdf is password-protected"):
        read_document(write_encrypted_pdf(tmp_path / "locked.pdf"))


def test_pdf_with_only_an_owner_password_opens(tmp_path: Path):
    from pypdf import PdfReader, PdfWriter

    plain = write_pdf(tmp_path / "plain.pdf", [["Printing restricted, reading allowed."]])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    restricted = tmp_path / "restricted.pdf"
    with open(restricted, "wb") as handle:
        writer.write(handle)
    assert PdfReader(restricted).is_encrypted
    assert "reading allowed" in read_document(restricted).text


def test_scanned_pdf_without_text_layer_says_so(tmp_path: Path):
    path = write_pdf(tmp_path / "scan.pdf", [[], [], []], scanned=True)
    with pytest.raises(DocumentError, match=r"scan\.pdf has no text layer \(3 pages .*OCR"):
        read_document(path)


def test_damaged_pdf_is_a_document_error(tmp_path: Path):
    good = write_long_pdf(tmp_path / "good.pdf", page_count=3).read_bytes()
    (tmp_path / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (tmp_path / "fake.pdf").write_bytes(b"this is not a pdf at all")
    with pytest.raises(DocumentError, match="fake.pdf isn't a valid PDF"):
        read_document(tmp_path / "fake.pdf")
    try:
        document = read_document(tmp_path / "truncated.pdf")
    except DocumentError as error:
        assert "truncated.pdf" in str(error)
    else:  # pypdf may recover the pages before the cut; then it must have real text
        assert "Paragraph 0:" in document.text


# --- Word ------------------------------------------------------------------------------------


def test_docx_headings_lists_and_tables_in_reading_order(tmp_path: Path):
    document = read_document(write_docx(tmp_path / "report.docx", paragraphs=4))
    text = document.text
    assert document.kind == "docx" and document.pages is None
    assert text.startswith("# Quarterly Report\n\n## Summary\n\n" + sample_paragraph(0, words=20))
    assert "### Details\n\n- First point\n- Second point" in text
    assert "| Region | Sales | Growth |\n| --- | --- | --- |\n| North | 120 | 4% |\n| South | 95 | -2% |" in text
    order = [text.index(s) for s in ("## Summary", sample_paragraph(3, words=20), "| Region", "Closing remarks")]
    assert order == sorted(order)


def test_docx_merged_table_cells_appear_once(tmp_path: Path):
    import docx

    word = docx.Document()
    table = word.add_table(rows=2, cols=3)
    merged = table.cell(0, 0).merge(table.cell(0, 2))
    merged.text = "Spanning title"
    for c, value in enumerate(("a", "b", "c")):
        table.cell(1, c).text = value
    word.save(str(tmp_path / "merged.docx"))
    text = read_document(tmp_path / "merged.docx").text
    assert text.count("Spanning title") == 1
    assert "| a | b | c |" in text


def test_damaged_or_empty_docx(tmp_path: Path):
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DocumentError, match="broken.docx isn't a readable Word document"):
        read_document(tmp_path / "broken.docx")
    import docx

    docx.Document().save(str(tmp_path / "blank.docx"))
    with pytest.raises(DocumentError, match="blank.docx has no text"):
        read_document(tmp_path / "blank.docx")


# --- text, Markdown, code --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(FRENCH, "utf-8"), (FRENCH, "cp1252"), (RUSSIAN, "cp1251"), (RUSSIAN, "utf-16"), (FRENCH, "utf-8-sig")],
)
def test_text_encodings_are_detected(tmp_path: Path, text: str, encoding: str):
    path = tmp_path / "notes.txt"
    path.write_bytes(text.encode(encoding))
    document = read_document(path)
    assert document.kind == "text"
    assert document.text == text.strip()


def test_markdown_and_code_kinds(tmp_path: Path):
    (tmp_path / "README.md").write_text("# Title\r\n\r\nBody text.\r\n", encoding="utf-8")
    (tmp_path / "tool.py").write_text("def main():\n    return 42\n", encoding="utf-8")
    (tmp_path / "LICENSE").write_text("Permission is hereby granted, free of charge.\n", encoding="utf-8")
    markdown = read_document(tmp_path / "README.md")
    assert (markdown.kind, markdown.text) == ("markdown", "# Title\n\nBody text.")
    code = read_document(tmp_path / "tool.py")
    assert (code.kind, code.language) == ("code", "python")
    assert "    return 42" in code.text
    assert read_document(tmp_path / "LICENSE").kind == "text"  # no suffix, but clearly text


# --- HTML ------------------------------------------------------------------------------------

PAGE = """<!doctype html><html><head><title>Ignored title</title>
<style>body { color: red }</style><script>alert("never shown")</script>
<link rel="stylesheet" href="http://example.invalid/style.css"></head>
<body><nav><a href="http://example.invalid/">Home</a></nav>
<h1>Annual   report</h1>
<p>Revenue grew <b>12%</b> in
   2024.</p><p>AT&amp;T&nbsp;and caf&eacute;s.</p>
<img src="http://example.invalid/chart.png" alt="chart">
<h2>Highlights</h2><ul>
  <li>First</li>
  <li>Second</li>
</ul>
<pre>  indented
    code</pre>
<table><tr><th>Q</th><th>Sales</th></tr><tr><td>Q1</td><td>10</td></tr></table>
<h3></h3><noscript>Enable JavaScript</noscript></body></html>"""


def test_html_to_readable_text():
    text = html_to_text(PAGE)
    assert "alert" not in text and "color: red" not in text and "Ignored title" not in text
    assert "Enable JavaScript" not in text
    assert "# Annual report\n\nRevenue grew 12% in 2024.\n\nAT&T and cafés." in text
    assert "## Highlights\n\n- First\n- Second" in text
    assert "  indented\n    code" in text
    assert "Q | Sales\nQ1 | 10" in text
    assert "\n\n\n" not in text and not text.endswith("#")


def test_html_file_in_a_legacy_encoding(tmp_path: Path):
    path = tmp_path / "page.html"
    path.write_bytes(('<html><head><meta charset="windows-1252"></head><body><h1>Caf\xe9</h1>'
                      "<p>" + FRENCH + "</p></body></html>").encode("cp1252"))
    document = read_document(path)
    assert document.kind == "html"
    assert document.text.startswith("# Café\n\nLes élèves")


# --- bad input -------------------------------------------------------------------------------


def test_empty_and_blank_files(tmp_path: Path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.md").write_text("  \n\n \t\n", encoding="utf-8")
    (tmp_path / "blank.html").write_text("<html><script>x()</script></html>", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"^empty\.txt is empty\.$"):
        read_document(tmp_path / "empty.txt")
    with pytest.raises(DocumentError, match=r"^blank\.md has no text to read\.$"):
        read_document(tmp_path / "blank.md")
    with pytest.raises(DocumentError, match=r"^blank\.html has no text to read\.$"):
        read_document(tmp_path / "blank.html")


def test_binary_files_are_refused(tmp_path: Path):
    noise = bytes((n * 7919 + 13) % 256 for n in range(4096))
    (tmp_path / "data.txt").write_bytes(noise)
    (tmp_path / "blob.dat").write_bytes(noise)
    (tmp_path / "controls.txt").write_bytes(b"\x01\x02\x03\x04\x05\x06 text \x07\x08" * 100)
    with pytest.raises(DocumentError, match="data.txt looks like a binary file"):
        read_document(tmp_path / "data.txt")
    with pytest.raises(DocumentError, match=r"blob\.dat: “\.dat” files aren't supported \(it isn't text\)"):
        read_document(tmp_path / "blob.dat")
    with pytest.raises(DocumentError, match="controls.txt looks like a binary file"):
        read_document(tmp_path / "controls.txt")


def test_unsupported_types_name_what_was_dropped(tmp_path: Path):
    (tmp_path / "numbers.xlsx").write_bytes(b"PK\x03\x04whatever")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DocumentError, match=r"numbers\.xlsx: Excel spreadsheets aren't supported\. Qwen Desk reads PDF"):
        read_document(tmp_path / "numbers.xlsx")
    with pytest.raises(DocumentError, match=r"photo\.png: images aren't supported"):
        read_document(tmp_path / "photo.png")


@pytest.mark.parametrize("name", ["huge.txt", "huge.pdf", "huge.docx"])
def test_huge_file_is_refused_without_reading_it(tmp_path: Path, monkeypatch, name: str):
    path = tmp_path / name
    with open(path, "wb") as handle:
        handle.truncate(500 * 1024 * 1024)  # sparse: 500 MB long, no disk used

    def no_reading(*args, **kwargs):
        raise AssertionError("a file over the size limit was opened for reading")

    monkeypatch.setattr(Path, "read_bytes", no_reading)
    monkeypatch.setattr(Path, "open", no_reading)
    monkeypatch.setattr(builtins, "open", no_reading)
    with pytest.raises(DocumentError, match=rf"{name} is 500 MB; Qwen Desk reads documents up to 200 MB"):
        read_document(path)
    assert MAX_DOCUMENT_BYTES == 200 * 1024 * 1024


def test_size_limit_is_a_parameter(tmp_path: Path):
    (tmp_path / "small.txt").write_text("x" * 2000, encoding="utf-8")
    with pytest.raises(DocumentError, match="small.txt is 0 MB"):
        read_document(tmp_path / "small.txt", max_bytes=1000)
    assert read_document(tmp_path / "small.txt", max_bytes=4000).characters == 2000


def test_missing_file_and_folder(tmp_path: Path):
    with pytest.raises(DocumentError, match="gone.pdf: the file doesn't exist"):
        read_document(tmp_path / "gone.pdf")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DocumentError, match="folder is a folder"):
        read_document(tmp_path / "folder")


def test_several_files_at_once_keep_the_good_ones(tmp_path: Path):
    pdf = write_long_pdf(tmp_path / "a.pdf", page_count=2)
    docx_path = write_docx(tmp_path / "b.docx")
    (tmp_path / "c.txt").write_text("Plain notes.", encoding="utf-8")
    (tmp_path / "empty.md").write_bytes(b"")
    scan = write_pdf(tmp_path / "scan.pdf", [[]], scanned=True)
    batch = read_documents([pdf, docx_path, tmp_path / "empty.md", str(tmp_path / "c.txt"), scan, pdf])
    assert [d.name for d in batch.documents] == ["a.pdf", "b.docx", "c.txt"]  # duplicate read once
    assert [(f.path.name, f.message.split(" ")[0]) for f in batch.failures] == [
        ("empty.md", "empty.md"), ("scan.pdf", "scan.pdf")]
    assert "is empty" in batch.failures[0].message and "no text layer" in batch.failures[1].message


def test_every_failure_is_a_document_error_not_a_crash(tmp_path: Path, monkeypatch):
    """Whatever pdfium raises inside a malformed file becomes a DocumentError naming the file."""
    import pypdfium2

    pdf = write_long_pdf(tmp_path / "odd.pdf", page_count=1)

    def explode(self, *args, **kwargs):
        raise pypdfium2.PdfiumError("Failed to load text page.")

    monkeypatch.setattr(pypdfium2.PdfPage, "get_textpage", explode)
    with pytest.raises(DocumentError, match=r"odd\.pdf isn't a readable PDF \(it's damaged or incomplete\)"):
        read_document(pdf)
    assert documents.SUPPORTED_DESCRIPTION.startswith("PDF")
