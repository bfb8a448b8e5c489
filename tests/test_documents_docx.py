"""Word documents as people have them, written by tools Qwen Desk doesn't read them with:
pandoc (footnotes, nested tables, lists) and hand-written XML parts (text boxes, merged cells,
headers and footers, Strict OOXML, broken elements, zip and entity bombs)."""

from __future__ import annotations

import difflib
import json
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from mlx_backend.documents.reading import read_document
from mlx_backend.errors import DocumentError
from tests.support.docx_parts import p, write_docx

ROOT = Path(__file__).resolve().parents[1]
needs_pandoc = pytest.mark.skipif(shutil.which("pandoc") is None, reason="pandoc is not installed")

MARKDOWN = """\
# Quarterly Report

The board met on 3 March.[^board] Revenue grew by 12 percent in the quarter.[^rev]

## Decisions

- Open the Lisbon office
- Hire two engineers

1. Approve the budget
2. Review in June

+------------+-----------------------------+
| Region     | Detail                      |
+============+=============================+
| North      | +---------+---------+       |
|            | | Oslo    | Bergen  |       |
|            | +---------+---------+       |
|            | | Tromsø  | Bodø    |       |
|            | +---------+---------+       |
+------------+-----------------------------+
| South      | Madrid and Seville          |
+------------+-----------------------------+

## Open questions

Whether the Porto office stays open is still undecided.

[^board]: Minutes were taken by the secretary, Ana Ferreira.
[^rev]: Compared with the same quarter last year.
"""


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@pytest.fixture(scope="module")
def pandoc_docx(tmp_path_factory) -> Path:
    if shutil.which("pandoc") is None:
        pytest.skip("pandoc is not installed")
    folder = tmp_path_factory.mktemp("pandoc")
    (folder / "report.md").write_text(MARKDOWN, encoding="utf-8")
    subprocess.run(["pandoc", "report.md", "-o", "report.docx"], cwd=folder, check=True)
    return folder / "report.docx"


@needs_pandoc
def test_pandoc_document_matches_pandocs_own_plain_text(pandoc_docx: Path):
    document = read_document(pandoc_docx)
    reference = subprocess.run(["pandoc", str(pandoc_docx), "-t", "plain"], check=True,
                               capture_output=True, text=True).stdout
    ratio = difflib.SequenceMatcher(None, _words(document.text), _words(reference), autojunk=False).ratio()
    assert ratio > 0.85, (ratio, document.text)
    assert document.kind == "docx" and document.notes == ()


@needs_pandoc
def test_footnotes_nested_tables_and_lists_are_kept_in_order(pandoc_docx: Path):
    text = read_document(pandoc_docx).text
    # Footnote markers where they were, the notes themselves after the body, in reference order.
    assert "3 March.[^1]" in text and "quarter.[^2]" in text
    assert text.index("[^1]: Minutes were taken by the secretary, Ana Ferreira.") < \
        text.index("[^2]: Compared with the same quarter last year.")
    assert text.index("still undecided") < text.index("[^1]: Minutes")
    # The nested table's cells are in the outer cell, not lost.
    north = next(line for line in text.splitlines() if line.startswith("| North"))
    for city in ("Oslo", "Bergen", "Tromsø", "Bodø"):
        assert city in north
    assert "- Open the Lisbon office\n- Hire two engineers" in text
    assert "1. Approve the budget\n1. Review in June" in text
    assert text.index("## Decisions") < text.index("| Region") < text.index("## Open questions")


def test_endnotes_are_read_after_the_footnotes(tmp_path: Path):
    body = ('<w:p><w:r><w:t>See the appendix.</w:t></w:r><w:r><w:endnoteReference w:id="2"/></w:r>'
            '<w:r><w:t> And a footnote.</w:t></w:r><w:r><w:footnoteReference w:id="1"/></w:r></w:p>')
    path = write_docx(tmp_path / "notes.docx", body,
                      footnotes=[(1, p("Footnote body."))], endnotes=[(2, p("Endnote body."))])
    text = read_document(path).text
    assert "See the appendix.[^e1] And a footnote.[^1]" in text
    assert "[^e1]: Endnote body." in text and "[^1]: Footnote body." in text


_TEXT_BOX = (
    '<w:p><w:r><w:t>Before the box.</w:t></w:r><w:r><mc:AlternateContent>'
    '<mc:Choice Requires="wps"><w:drawing><wps:wsp><wps:txbx><w:txbxContent>{inner}</w:txbxContent>'
    '</wps:txbx></wps:wsp></w:drawing></mc:Choice>'
    '<mc:Fallback><w:pict><v:shape><v:textbox><w:txbxContent>{inner}</w:txbxContent></v:textbox>'
    '</v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>'
)


def test_text_boxes_are_read_once_not_once_per_fallback(tmp_path: Path):
    body = _TEXT_BOX.format(inner=p("Inside the text box.")) + p("After the box.")
    text = read_document(write_docx(tmp_path / "box.docx", body)).text
    assert text.count("Inside the text box.") == 1
    assert text.index("Before the box.") < text.index("Inside the text box.") < text.index("After the box.")


def test_a_document_of_only_text_boxes_has_text(tmp_path: Path):
    body = ("<w:p><w:r><w:pict><v:shape><v:textbox><w:txbxContent>" + p("Old VML box.")
            + "</w:txbxContent></v:textbox></v:shape></w:pict></w:r></w:p>"
            + _TEXT_BOX.format(inner=p("Modern box.")).replace("<w:t>Before the box.</w:t>", ""))
    text = read_document(write_docx(tmp_path / "boxes.docx", body)).text
    assert text.split("\n\n") == ["Old VML box.", "Modern box."]


def _cell(text: str, props: str = "") -> str:
    return f"<w:tc><w:tcPr>{props}</w:tcPr>{p(text) if text else '<w:p/>'}</w:tc>"


def test_merged_cells_keep_their_text_once_and_columns_line_up(tmp_path: Path):
    rows = [
        _cell("Name") + _cell("Q1") + _cell("Q2"),
        _cell("Both quarters", '<w:gridSpan w:val="2"/>') + _cell("x"),
        _cell("Tall", '<w:vMerge w:val="restart"/>') + _cell("a") + _cell("b"),
        _cell("", "<w:vMerge/>") + _cell("c") + _cell("d"),
    ]
    body = "<w:tbl>" + "".join(f"<w:tr>{row}</w:tr>" for row in rows) + "</w:tbl>"
    text = read_document(write_docx(tmp_path / "merged.docx", body)).text
    assert text.splitlines() == [
        "| Name | Q1 | Q2 |", "| --- | --- | --- |", "| Both quarters |  | x |",
        "| Tall | a | b |", "|  | c | d |",
    ]


def test_headers_and_footers_once_each_whatever_the_sections(tmp_path: Path):
    # Two sections with their own header parts saying the same thing, one footer.
    body = p("Body text.") + '<w:sectPr><w:headerReference w:type="default" r:id="rId1"/></w:sectPr>'
    path = write_docx(tmp_path / "furniture.docx", body, headers=[p("ACME Confidential"), p("ACME Confidential")],
                      footers=[p("Printed 2024")])
    text = read_document(path).text
    assert text.split("\n\n") == ["Header: ACME Confidential", "Body text.", "Footer: Printed 2024"]


def test_strict_ooxml_is_read(tmp_path: Path):
    body = p("Strict heading", "Heading1") + p("Strict body text.")
    styles = ('<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>')
    path = write_docx(tmp_path / "strict.docx", body, strict=True, styles=styles,
                      footnotes=[(1, p("Strict note."))])
    text = read_document(path).text
    assert text.startswith("## Strict heading\n\nStrict body text.")
    assert zipfile.ZipFile(path).read("word/document.xml").count(b"purl.oclc.org") >= 1


def test_one_bad_cell_is_skipped_with_a_note_not_the_whole_document(tmp_path: Path):
    rows = [_cell("Good") + _cell("Bad", '<w:gridSpan w:val="two"/>'), _cell("Also good") + _cell("Fine")]
    body = p("Before.") + "<w:tbl>" + "".join(f"<w:tr>{row}</w:tr>" for row in rows) + "</w:tbl>" + p("After.")
    document = read_document(write_docx(tmp_path / "bad.docx", body))
    assert "Before." in document.text and "After." in document.text
    assert "Also good" in document.text and "Fine" in document.text and "Bad" not in document.text
    assert document.notes == ("Some of the document could not be read and was skipped: one table cell.",)


def test_damaged_xml_is_a_clear_error(tmp_path: Path):
    path = write_docx(tmp_path / "broken.docx", p("Fine") + "<w:p><w:r><w:t>unclosed")
    with pytest.raises(DocumentError, match=r"broken.docx isn't a readable Word document \(its text is damaged\)"):
        read_document(path)


def test_entity_bombs_are_refused(tmp_path: Path):
    path = tmp_path / "laughs.docx"
    write_docx(path, p("x"))
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">' for i in range(1, 10))
              + ']><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
              "<w:body><w:p><w:r><w:t>&lol9;</w:t></w:r></w:p></w:body></w:document>")
    _replace_member(path, "word/document.xml", laughs.encode())
    with pytest.raises(DocumentError, match="DOCTYPE declaration"):
        read_document(path)


def _replace_member(path: Path, member: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as source:
        items = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info, content in items:
            target.writestr(info.filename, data if info.filename == member else content)


# --- zip bombs: refused in under a second, without the memory -----------------------------------

_PARAGRAPH = b"<w:p><w:r><w:t>" + b"all work and no play " * 20 + b"</w:t></w:r></w:p>"


def _bomb(path: Path, expanded_bytes: int) -> Path:
    """A .docx whose document.xml really expands to ``expanded_bytes`` (and says so)."""
    write_docx(path, p("seed"))
    with zipfile.ZipFile(path) as source:
        items = [(info.filename, source.read(info)) for info in source.infolist() if info.filename != "word/document.xml"]
    head = (b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            b"<w:body>")
    block = _PARAGRAPH * (1024 * 1024 // len(_PARAGRAPH))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, content in items:
            target.writestr(name, content)
        info = zipfile.ZipInfo("word/document.xml")
        info.compress_type = zipfile.ZIP_DEFLATED
        with target.open(info, "w", force_zip64=True) as member:
            member.write(head)
            written = len(head)
            while written < expanded_bytes:
                member.write(block)
                written += len(block)
            member.write(b"</w:body></w:document>")
    return path


def _lie_about_size(path: Path, member: str, declared: int) -> None:
    """Rewrite ``member``'s uncompressed size in the local header and the central directory."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, size_offset, name_offset in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            length = struct.unpack_from("<H", data, start + (26 if signature == b"PK\x03\x04" else 28))[0]
            if bytes(data[start + name_offset:start + name_offset + length]) == name:
                struct.pack_into("<I", data, start + size_offset, declared)
            start += 4
    path.write_bytes(bytes(data))


_MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from mlx_backend.documents.reading import read_document
    from mlx_backend.errors import DocumentError
    import mlx_backend.documents.word, zipfile, xml.etree.ElementTree  # imported before the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        read_document(sys.argv[1])
        message = None
    except DocumentError as error:
        message = str(error)
    elapsed = time.perf_counter() - start
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"message": message, "elapsed": elapsed, "grown_mb": grown_kb / 1024}))
""")


def _measure(path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    honest = _bomb(folder / "honest.docx", 160 * 1024 * 1024)  # says it expands to 160 MB
    ratio = _bomb(folder / "ratio.docx", 8 * 1024 * 1024)  # small, but ~1000:1
    liar = _bomb(folder / "liar.docx", 160 * 1024 * 1024)
    _lie_about_size(liar, "word/document.xml", 4096)
    return {"honest": honest, "ratio": ratio, "liar": liar}


@pytest.mark.parametrize("kind, message", [
    ("honest", r"honest.docx would expand to 1\d\d MB when opened"),
    ("ratio", r"ratio.docx is compressed [\d,]+ to 1 \(\d MB packed into \d+ KB\)"),
    ("liar", r"liar.docx isn't a readable Word document \(it is damaged or incomplete\)"),
])
def test_zip_bombs_are_refused_fast_and_small(bombs: dict[str, Path], kind: str, message: str):
    assert bombs[kind].stat().st_size < 2 * 1024 * 1024
    outcome = _measure(bombs[kind])
    assert outcome["message"] and re.search(message, outcome["message"]), outcome
    assert outcome["elapsed"] < 1.0, outcome
    assert outcome["grown_mb"] < 100, outcome


def test_real_bytes_are_counted_when_the_directory_lies(bombs: dict[str, Path], monkeypatch):
    """Declared sizes pass but the real stream is bigger than the limit: the streaming count stops it."""
    import mlx_backend.documents.word as word

    monkeypatch.setattr(word, "MAX_PART_BYTES", 4 * 1024 * 1024)
    monkeypatch.setattr(word, "_check_declared", lambda archive, name: None)  # as if the sizes lied
    with pytest.raises(DocumentError, match=r"ratio.docx can't be read safely: it expands to more than 4 MB of text"):
        read_document(bombs["ratio"])
