"""PDF text as people have it: the cleanup rules on their own, then real-world-like PDFs written
with reportlab and qpdf, read by us and compared with poppler's pdftotext."""

from __future__ import annotations

import difflib
import gettext
import glob
import importlib.util
import inspect
import re
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from mlx_backend.documents import pdf as pdf_module
from mlx_backend.documents.cleanup import clean_page_text, drop_repeated_edges, is_unreadable, page_ranges
from mlx_backend.documents.reading import read_document
from mlx_backend.errors import DocumentError
from tests.support.documents import (
    ARTICLE_HEADER,
    CJK_FONT_CANDIDATES,
    find_font,
    pdftotext,
    qpdf_encrypt,
    sample_paragraph,
    write_article_pdf,
    write_cjk_pdf,
    write_columns_pdf,
    write_garbled_pdf,
    write_long_pdf,
    write_text_and_scan_pdf,
)

LIGATURES = re.compile(r"[\ufb00-\ufb06]")
CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\ufffd]")

needs_reportlab = pytest.mark.skipif(
    importlib.util.find_spec("reportlab") is None or find_font(("DejaVuSans.ttf",)) is None or find_font(("DejaVuSerif.ttf",)) is None,
    reason="reportlab (test extra) and the DejaVu fonts (fonts-dejavu-core) write the test PDFs")
needs_pdftotext = pytest.mark.skipif(shutil.which("pdftotext") is None,
                                     reason="pdftotext (poppler-utils) is the independent reference")
needs_qpdf = pytest.mark.skipif(shutil.which("qpdf") is None, reason="qpdf writes the AES-256 PDFs")


def similarity(ours: str, reference: str) -> float:
    """Word-level similarity; the reference's compatibility forms (its ligatures) are folded so
    the score measures content and order, which the separate asserts on forms don't."""
    ref_words = unicodedata.normalize("NFKC", reference).replace("\u00ad", "").split()
    return difflib.SequenceMatcher(None, ours.split(), ref_words, autojunk=False).ratio()


# --- cleanup rules ---------------------------------------------------------------------------


def test_pdfium_hyphen_marks_join_words_but_keep_compounds_before_capitals():
    assert clean_page_text("the infor\x02mation desk\r\nnext line") == "the information desk\nnext line"
    assert clean_page_text("the North\x02East wing") == "the North-East wing"
    assert clean_page_text("from 2019\x022020") == "from 2019-2020"


def test_line_end_hyphens_join_lowercase_continuations_only():
    assert clean_page_text("an infor-\nmation desk") == "an information desk"
    assert clean_page_text("the North-\nEast wing") == "the North-\nEast wing"
    assert clean_page_text("a well-known result\nand more") == "a well-known result\nand more"
    assert clean_page_text("pages 12-\n14") == "pages 12-\n14"
    assert clean_page_text("Gro\u00df-\nbritannien und d\u00e9-\ncouvrir") == "Gro\u00dfbritannien und d\u00e9couvrir"
    assert clean_page_text("a pa\u00adragraph and a hy\u00ad\nphen") == "a paragraph and a hyphen"


def test_ligatures_and_presentation_forms_fold_but_meaningful_forms_stay():
    assert clean_page_text("\ufb01rst \ufb02ow o\ufb03ce \ufb00 \ufb04") == "first flow office ff ffl"
    # Arabic positional glyph forms (what some PDFs' fonts map to) become the letters.
    assert clean_page_text("\ufee3\ufeae\ufea3\ufe92\ufe8e") == "\u0645\u0631\u062d\u0628\u0627"
    kept = "x\u00b2 + H\u2082O, \u00bd cup, Qwen\u2122, \u2460 first; \u4f60\u597d\uff0c\u4e16\u754c\uff01 \uff8a\uff9d\uff76\uff78"
    assert clean_page_text(kept) == kept
    assert clean_page_text("Cafe\u0301 de\u0301ja\u0300") == "Caf\u00e9 d\u00e9j\u00e0"  # canonical (NFC) only


def test_control_characters_go_and_spacing_is_plain():
    text = clean_page_text("a\x00b\x07c\x1bd\x7fe\ufffef\tg\u00a0h\x0cnext  \n\n\n\nlast")
    assert text == "abcdef\tg h\nnext\n\nlast"
    assert not CONTROLS.search(text)


def _pages(count: int, body: list[str] | None = None) -> list[str]:
    return [
        "\n".join([f"ACME Corp \u2014 Annual Report {2024}", f"Chapter {n // 3 + 1}"]
                  + (body or [f"Body line {n} a", f"Body line {n} b"])
                  + [f"Page {n + 1} of {count}", str(n + 1)])
        for n in range(count)
    ]


def test_running_headers_and_footers_are_kept_once():
    pages = drop_repeated_edges(_pages(8))
    joined = "\n".join(pages)
    assert joined.count("ACME Corp \u2014 Annual Report 2024") == 1
    assert pages[0].startswith("ACME Corp")  # kept where it first appears
    assert joined.count(" of 8") == 1 and "Page 1 of 8" in pages[0]
    assert not any(line.strip().isdigit() for line in joined.split("\n"))  # bare page numbers: none
    for n in range(8):
        assert f"Body line {n} a" in pages[n] and f"Body line {n} b" in pages[n]


def test_page_numbers_restarting_after_roman_front_matter_are_dropped():
    numbers = ["i", "ii", "iii", "iv"] + [str(n) for n in range(1, 13)]
    bodies = [sample_paragraph(k, words=6) for k in range(len(numbers))]
    pages = drop_repeated_edges([f"{body}\n{n}" for body, n in zip(bodies, numbers)])
    assert pages == bodies


def test_edges_of_short_documents_and_repeated_body_lines_stay():
    assert drop_repeated_edges(_pages(2)) == _pages(2)  # two pages can't show a pattern
    body = ["Intro", "The same sentence in every page's middle.", "Another line.", "More", "Last"]
    pages = drop_repeated_edges([f"Top {n}\n" + "\n".join(body) + f"\nEnd {n}" for n in range(5)])
    assert all("The same sentence in every page's middle." in page for page in pages)


def test_chapter_running_headers_with_page_numbers_are_kept_once():
    chapters = ["Chapter 1: Basics"] * 4 + ["Chapter 2: Function reference"] * 12 + ["Index"] * 4
    totals = [(n * 7919) % 1000 for n in range(20)]  # not counting up: content, kept
    pages = [f"{title} {n + 1}\n{sample_paragraph(n, words=8)}\nSubtotal: {totals[n]}.00"
             for n, title in enumerate(chapters)]
    joined = "\n".join(drop_repeated_edges(pages))
    assert joined.count("Chapter 2: Function reference") == 1 and joined.count("Chapter 1: Basics") == 1
    assert all(sample_paragraph(n, words=8) in joined for n in range(20))
    assert all(f"Subtotal: {total}.00" in joined for total in totals)


def test_page_ranges():
    assert page_ranges([3]) == "3"
    assert page_ranges([3, 4, 5, 9]) == "3-5 and 9"
    assert page_ranges([1, 3, 4, 7, 8, 9]) == "1, 3-4 and 7-9"


# --- telling garbage from text ---------------------------------------------------------------

# The glyph-number layer real PDFs with a wrong subset-font map gave ("$PNQVUFS4DJFODF" for
# "Computer Science", as pypdf and pdftotext both read it), continued with the same shift.
CAPTURED_GARBAGE = (
    "$PNQVUFS4DJFODF%FQBSUNFOU\n\"OOVBM3FQPSU\u0013\u0011\u0013\u0014\n"
    "5IFEFQBSUNFOUXFMDPNFEUXFOUZOFXTUVEFOUTUIJTZFBSBOEPQFOFEBOFXMBCPSBUPSZ\n"
    "'BDVMUZNFNCFSTQVCMJTIFEPWFSGJGUZQBQFSTJOQFFSSFWJFXFEKPVSOBMT\n"
)
PRIVATE_USE = "\ue000\ue013\ue021\ue044 \ue051\ue052\ue013\ue021\ue044\ue000\ue013 " * 6
REPLACEMENT = "\ufffd\ufffd\ufffd \ufffd\ufffd \ufffd\ufffd\ufffd\ufffd. " * 8

REAL_TEXTS = {
    "english": "The committee reviewed the proposal on Tuesday and agreed to fund two new "
               "laboratories. Dr. O'Neil (chair) said the U.S. partners would join in 2025.",
    "french": "François écrit que la région a déjà changé ; les élèves du lycée étudient "
              "l'économie maritime depuis l'été dernier, « avec passion ».",
    "german": "Die Straßenbahn fährt über die Brücke; Größenangaben in Millimetern, "
              "Äpfel und Öl für 3,50 €. Das Bundesverfassungsgericht entschied am Montag.",
    "russian": "Комитет рассмотрел предложение во вторник и согласился финансировать две новые "
               "лаборатории. Председатель сказал, что партнёры присоединятся в 2025 году.",
    "greek": "Η επιτροπή εξέτασε την πρόταση την Τρίτη και συμφώνησε να χρηματοδοτήσει δύο νέα "
             "εργαστήρια στην Αθήνα και στη Θεσσαλονίκη.",
    "japanese": "委員会は火曜日に提案を検討し、二つの新しい研究所に資金を提供することに合意した。"
                "議長は、米国のパートナーが二〇二五年に参加すると述べた。",
    "chinese": "委员会于星期二审议了该提案，并同意资助两个新的实验室。主席表示，美国合作伙伴将于2025年加入。",
    "korean": "위원회는 화요일에 제안을 검토하고 두 개의 새로운 연구소에 자금을 지원하기로 합의했다.",
    "arabic": "راجعت اللجنة الاقتراح يوم الثلاثاء ووافقت على تمويل مختبرين جديدين. وقال الرئيس إن "
              "الشركاء سينضمون في عام 2025.",
    "hebrew": "הוועדה בחנה את ההצעה ביום שלישי והסכימה לממן שתי מעבדות חדשות בירושלים.",
    "hindi": "समिति ने मंगलवार को प्रस्ताव की समीक्षा की और दो नई प्रयोगशालाओं को धन देने पर सहमति व्यक्त की।",
    "all_caps_notice": "THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS \"AS IS\" AND "
                       "ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED "
                       "WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED.",
    "form": "NAME: ________  DATE OF BIRTH: __/__/____  SSN: ___-__-____\nADDRESS: ________ "
            "CITY: ______ STATE: __ ZIP: _____\nSIGNATURE: ____________ FORM W-4 (2025) OMB NO. 1545-0074",
    "table": "Region  Q1  Q2  Q3  Q4\nNorth  120.5  98.2  101.0  130.7\nSouth  95.1  -2.3%  88.0  91.4\n"
             "EMEA  1,204  1,330  1,298  1,401\nAPAC  870  912  955  1,020\nTotal  2,290  2,340  2,443  2,643",
}


@pytest.mark.parametrize("text", [CAPTURED_GARBAGE, PRIVATE_USE, REPLACEMENT], ids=["shifted", "pua", "fffd"])
def test_garbled_layers_are_recognized(text: str):
    assert is_unreadable(text)


@pytest.mark.parametrize("name", sorted(REAL_TEXTS))
def test_real_text_in_any_script_is_not_called_garbage(name: str):
    text = (REAL_TEXTS[name] + "\n") * 4
    assert not is_unreadable(text)
    assert not is_unreadable(text.upper())  # a page set in capitals is still text


def test_source_code_is_not_called_garbage():
    code = "".join(inspect.getsource(module) for module in (difflib, gettext, glob))
    pages = [code[i:i + 2500] for i in range(0, len(code), 2500)]
    assert pages and not any(is_unreadable(page) for page in pages)


def _shifted(text: str) -> str:
    # The glyph-number layer of a subset font: code points 31 lower, the space glyph dropped.
    return "".join(chr(ord(c) - 31) if ord(c) >= 0x41 else ("" if c == " " else c) for c in text)


def test_real_translations_from_the_systems_message_catalogs():
    """Real text in ~35 languages (gettext catalogs shipped with the OS) is never flagged, and
    for the cased scripts most of its glyph-shifted versions are."""
    catalogs = glob.glob("/usr/share/locale/*/LC_MESSAGES/libc.mo")
    if len(catalogs) < 10:
        pytest.skip("the system has no translated message catalogs")
    real = shifted_found = shifted_total = 0
    for catalog in catalogs:
        lang = catalog.split("/")[4]
        messages = []
        for mo in glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo"):
            try:
                with open(mo, "rb") as handle:
                    messages += [v for k, v in gettext.GNUTranslations(handle)._catalog.items()
                                 if k and isinstance(v, str)]
            except (OSError, ValueError, UnicodeDecodeError):
                continue
        text = "\n".join(messages)
        pages = [text[i:i + 2500] for i in range(0, min(len(text), 25000), 2500)]
        for page in pages:
            real += 1
            assert not is_unreadable(page), (lang, page[:200])
            assert not is_unreadable(page.upper()), (lang, page[:200])
            letters = [c for c in page if c.isalpha()]
            if sum(1 for c in letters if c.islower()) > len(letters) / 2:  # a cased script
                shifted_total += 1
                shifted_found += is_unreadable(_shifted(page))
    assert real >= 100
    assert shifted_found >= 0.75 * shifted_total


# --- real-world-like PDFs --------------------------------------------------------------------


@needs_reportlab
@needs_pdftotext
def test_article_reads_like_pdftotext_and_cleaner(tmp_path: Path, capfd):
    path = write_article_pdf(tmp_path / "article.pdf", page_count=6)
    document = read_document(path)
    assert (document.pages, document.notes) == (6, ())
    text = document.text
    assert similarity(text, pdftotext(path)) >= 0.9
    assert not LIGATURES.search(text) and not CONTROLS.search(text) and "\u00ad" not in text
    assert "first fleet" in text and "official figures" in text
    assert "information desk" in text and "infor-" not in text
    assert "the North-East wing" in text
    assert "Each paragraph ends" in text
    assert "Fran\u00e7ois \u00e9crit que la r\u00e9gion a d\u00e9j\u00e0 chang\u00e9" in text
    assert text.count(ARTICLE_HEADER) == 1 and text.startswith(ARTICLE_HEADER)
    assert len(re.findall(r"Page \d of 6", text)) == 1
    for page in range(1, 7):  # every page's own text is there, in order
        assert f"ledger of page {page}," in text
    assert [int(n) for n in re.findall(r"ledger of page (\d)", text)] == list(range(1, 7))
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no library chatter


@needs_reportlab
@needs_pdftotext
def test_three_columns_are_read_column_by_column(tmp_path: Path):
    words = ("rivers", "bridges", "markets")
    columns = [[f"{name.title()} column line {i} about {name}" for i in range(14)] for name in words]
    path = write_columns_pdf(tmp_path / "columns.pdf", columns)
    text = read_document(path).text
    # The same words as poppler's (which, on this page, interleaves columns 2 and 3 line by
    # line), in the order a reader reads them: column after column.
    assert Counter(text.split()) == Counter(pdftotext(path).split())
    lines = [line for line in text.split("\n") if line.strip()]
    assert lines == [line for column in columns for line in column]


@needs_reportlab
def test_scanned_pages_are_left_out_and_named(tmp_path: Path):
    path = write_text_and_scan_pdf(tmp_path / "mixed.pdf", text_pages=[1, 2, 10], page_count=10)
    document = read_document(path)
    assert document.pages == 10
    assert document.notes == ("Pages 3-9 have no text layer (scanned images); left out. "
                              "Run text recognition (OCR) on the file to include them.",)
    assert [int(n) for n in re.findall(r"Paragraph (\d+)0:", document.text)] == [1, 2, 10]

    only_scans = write_text_and_scan_pdf(tmp_path / "scan.pdf", text_pages=[], page_count=3)
    with pytest.raises(DocumentError, match=r"^scan\.pdf has no text layer \(3 pages of images.*OCR"):
        read_document(only_scans)


@needs_reportlab
@needs_pdftotext
def test_garbled_text_layer_is_left_out_not_summarized(tmp_path: Path, capfd):
    path = write_garbled_pdf(tmp_path / "report.pdf", good_pages=2, garbled_pages=3)
    # The file is honestly broken: the independent extractor reads the same gibberish.
    assert "$PNQVUFS4DJFODF" in CONTROLS.sub("", pdftotext(path))
    document = read_document(path)
    assert document.pages == 5
    assert document.notes == ("Pages 3-5 have text that can't be decoded (fonts without a usable "
                              "character map); left out.",)
    assert "$PNQ" not in document.text and "1BSBHSBQI" not in document.text
    assert document.text.count("Computer Science Department") == 2
    readable_pages = "\n".join(pdftotext(path).split("\f")[:2])
    assert similarity(document.text, readable_pages) >= 0.9

    all_bad = write_garbled_pdf(tmp_path / "gibberish.pdf", good_pages=0, garbled_pages=2)
    with pytest.raises(DocumentError, match=r"^gibberish\.pdf's text can't be decoded"):
        read_document(all_bad)
    capfd.readouterr()
    read_document(path)
    assert capfd.readouterr().err == ""  # no library warnings, even on a broken font


@needs_reportlab
@needs_qpdf
def test_aes256_encryption_with_and_without_a_user_password(tmp_path: Path):
    plain = write_article_pdf(tmp_path / "plain.pdf", page_count=3)
    restricted = qpdf_encrypt(plain, tmp_path / "restricted.pdf", user_password="")
    assert b"/AESV3" in restricted.read_bytes() or b"/V 5" in restricted.read_bytes()
    assert read_document(restricted).text == read_document(plain).text
    locked = qpdf_encrypt(plain, tmp_path / "locked.pdf", user_password="hunter2")
    with pytest.raises(DocumentError, match=r"^locked\.pdf is password-protected\. Open it in Preview"):
        read_document(locked)


@needs_reportlab
@needs_pdftotext
def test_cjk_pdf(tmp_path: Path):
    font = next((Path(p) for p in CJK_FONT_CANDIDATES if Path(p).is_file()), None)
    if font is None:
        pytest.skip("no CJK font installed (fonts-noto-cjk or fonts-wqy-microhei)")
    lines = ["委員会は火曜日に提案を検討した。", "主席表示，美国合作伙伴将于2025年加入。"]
    path = write_cjk_pdf(tmp_path / "cjk.pdf", font, lines)
    document = read_document(path)
    assert document.notes == ()
    for line in lines:
        assert line in document.text.replace("\n", "")


def test_truncated_and_corrupt_files_are_clear_errors(tmp_path: Path):
    good = write_long_pdf(tmp_path / "good.pdf", page_count=3).read_bytes()
    (tmp_path / "head.pdf").write_bytes(good[:200])
    with pytest.raises(DocumentError, match=r"^head\.pdf isn't a readable PDF \(it's damaged or incomplete\)\.$"):
        read_document(tmp_path / "head.pdf")
    (tmp_path / "noise.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    with pytest.raises(DocumentError, match=r"^noise\.pdf isn't a readable PDF"):
        read_document(tmp_path / "noise.pdf")
    (tmp_path / "cut.pdf").write_bytes(good[: len(good) * 2 // 3])
    try:
        document = read_document(tmp_path / "cut.pdf")
    except DocumentError as error:
        assert str(error).startswith("cut.pdf ")
    else:  # pdfium rebuilt what came before the cut: the user is told it is incomplete
        assert "Paragraph 0:" in document.text
        assert any("cut short" in note for note in document.notes)


def test_unreadable_file_is_a_document_error(tmp_path: Path, monkeypatch):
    path = write_long_pdf(tmp_path / "private.pdf", page_count=1)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pdf_module, "open", denied, raising=False)
    with pytest.raises(DocumentError, match=r"^private\.pdf: the file can't be opened \(Permission denied\)\.$"):
        read_document(path)


def test_a_damaged_page_is_named_and_the_rest_read(tmp_path: Path, monkeypatch):
    import pypdfium2

    path = write_long_pdf(tmp_path / "odd.pdf", page_count=3)
    real = pypdfium2.PdfPage.get_textpage

    def flaky(self, *args, **kwargs):
        if flaky.calls == 1:  # the second page
            flaky.calls += 1
            raise pypdfium2.PdfiumError("Failed to load text page.")
        flaky.calls += 1
        return real(self, *args, **kwargs)

    flaky.calls = 0
    monkeypatch.setattr(pypdfium2.PdfPage, "get_textpage", flaky)
    document = read_document(path)
    assert document.notes == ("Page 2 is damaged and couldn't be read; left out.",)
    assert "Paragraph 0:" in document.text and "Paragraph 4:" in document.text
    assert "Paragraph 2:" not in document.text


SYSTEM_PDFS = [path for path in ("/usr/share/doc/libtasn1-doc/libtasn1.pdf",
                                 "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
               if Path(path).is_file()]


@needs_pdftotext
@pytest.mark.skipif(not SYSTEM_PDFS, reason="no real PDFs shipped with this system's documentation")
@pytest.mark.parametrize("path", SYSTEM_PDFS or [None])
def test_real_pdfs_from_the_system_documentation(path: str, capfd):
    document = read_document(path)
    assert document.notes == ()
    assert similarity(document.text, pdftotext(Path(path))) >= 0.95
    assert not LIGATURES.search(document.text) and not CONTROLS.search(document.text)
    assert capfd.readouterr().err == ""


def test_page_starts_point_at_each_page_even_around_left_out_pages(tmp_path: Path):
    # Pages 2 and 3 are scans: left out of the text, but pages 4 and 5 keep their numbers.
    document = read_document(write_text_and_scan_pdf(tmp_path / "mixed.pdf", text_pages=[1, 4, 5], page_count=5))
    starts = document.page_starts
    assert len(starts) == 5 and starts[1] == starts[2] == starts[3]
    for page, start in zip((1, 4, 5), (starts[0], starts[3], starts[4])):
        following = starts[page] if page < 5 else len(document.text)
        # The writer numbers page N's paragraphs N0, N1, ...
        assert re.findall(r"Paragraph (\d+)0:", document.text[start:following]) == [str(page)]
