"""Text files and HTML pages as people have them: legacy encodings, UTF-16 without a byte-order
mark, pages that leave out </head> or a comment's end, menus around the text, deep nesting."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from mlx_backend.documents.decoding import decode_text, looks_binary
from mlx_backend.documents.html_page import html_to_text
from mlx_backend.documents.reading import read_document
from mlx_backend.errors import DocumentError

# --- encodings -------------------------------------------------------------------------------

WESTERN = [
    ("french", "François a reçu la lettre. Où est l'hôtel ? Très bien, merci.\n"),
    ("french_long", "Le comité s'est réuni à Genève ; François et Hélène ont présenté le budget "
                    "prévu pour l'été. Les élèves étrangers étaient déjà là.\n" * 3),
    ("german", "Grüße aus München! Die Straße ist schön, aber das Wetter war übel.\n"),
    ("spanish", "El niño comió piñata en España; ¿qué más? ¡Olé!\n"),
    ("portuguese", "Não há ação sem razão; a função da educação é essencial.\n"),
    ("danish", "Søren spiste rødgrød med fløde på Ærø.\n"),
    ("one_word", "Café\n"),
    ("names", "Name: François Müller\nCity: Montréal\n"),
    ("typography", "He said \u201chello\u201d \u2014 and left\u2026 It costs \u20ac5.\n"),
]


# Latin-1 where it can hold the text (curly quotes and the euro sign are cp1252 only).
WESTERN_FILES = [pytest.param(text, encoding, id=f"{name}-{encoding}") for name, text in WESTERN
                 for encoding in ("latin-1", "cp1252") if encoding == "cp1252" or text.isascii()
                 or all(ord(c) < 0x100 for c in text)]


@pytest.mark.parametrize(("text", "encoding"), WESTERN_FILES)
def test_western_legacy_files_read_as_windows_1252(text: str, encoding: str):
    decoded, used = decode_text(text.encode(encoding), "notes.txt")
    assert (decoded, used) == (text, "cp1252")


OTHER_LEGACY = [
    ("Zażółć gęślą jaźń. Polska jest krajem w Europie Środkowej, ze stolicą w Warszawie.\n", "cp1250"),
    ("Příliš žluoučký kůň úpěl ábelské ódy. Česká republika má hlavní město Prahu, řeky a hory.\n", "cp1250"),
    ("Árvíztűrő tükörfúrógép. Magyarország fővárosa Budapest, a Duna partján fekszik.\n", "cp1250"),
    ("Привет, мир! Это проверка кодировки текста на русском языке.\n", "cp1251"),
    ("Καλημέρα κόσμε, αυτό είναι ένα ελληνικό κείμενο.\n", "cp1253"),
    ("Grüße aus München! Die Straße ist schön.\n", "cp850"),  # a DOS file: 0x81 isn't cp1252
]


@pytest.mark.parametrize(("text", "encoding"), OTHER_LEGACY, ids=[e + ":" + t[:8] for t, e in OTHER_LEGACY])
def test_other_legacy_encodings_still_win_on_clear_evidence(text: str, encoding: str):
    decoded, _ = decode_text(text.encode(encoding), "notes.txt")
    assert decoded == text


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", [
    "Meeting notes, 12 March. Ça va? Attendees: Zoë, Jürgen and Ana.\r\n" * 8,
    "Протокол собрания, 12 марта. Присутствовали: Иван и Мария.\r\n" * 8,
], ids=["latin", "cyrillic"])
def test_utf16_without_a_byte_order_mark_is_text(tmp_path: Path, text: str, encoding: str):
    data = text.encode(encoding)
    assert not looks_binary(data)
    path = tmp_path / "export.txt"
    path.write_bytes(data)
    document = read_document(path)
    assert document.text == text.replace("\r\n", "\n").strip()
    assert document.encoding == encoding


def test_binary_data_is_still_binary(tmp_path: Path):
    samples = [
        os.urandom(4096),
        struct.pack("<2000I", *range(2000)),  # little-endian integers: zeros in both halves
        struct.pack("<2000H", *range(0, 4000, 2)),
        bytes(range(256)) * 16,
        b"\x89PNG\r\n\x1a\n" + bytes(4000),
    ]
    for index, data in enumerate(samples):
        assert looks_binary(data), index
        path = tmp_path / f"blob{index}.dat"
        path.write_bytes(data)
        with pytest.raises(DocumentError, match=rf"^blob{index}\.dat: .*aren't supported \(it isn't text\)"):
            read_document(path)


# --- HTML ------------------------------------------------------------------------------------


def test_page_without_closing_head_keeps_its_body():
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report</title>"
            "<link rel='stylesheet' href='a.css'><style>p{color:red}</style>"
            "<body><h1>Quarterly report</h1><p>Revenue grew by four percent.</p></body></html>")
    assert html_to_text(page) == "# Quarterly report\n\nRevenue grew by four percent."
    # No <body> tag either: the first non-head element starts the body, as in a browser.
    bare = "<html><head><title>T</title><meta name=x content=y><p>Just a paragraph.</p>"
    assert html_to_text(bare) == "Just a paragraph."
    text_in_head = "<head><title>T</title>Loose text starts the body.<p>Then more.</p>"
    assert html_to_text(text_in_head) == "Loose text starts the body.\n\nThen more."


def test_unclosed_comment_hides_the_rest_like_a_browser():
    page = "<p>Published text.</p><!-- draft: <p>secret unpublished paragraph</p>"
    assert html_to_text(page) == "Published text."
    assert html_to_text("<p>Before</p><!-- closed --><p>after</p>") == "Before\n\nafter"
    assert html_to_text("<p>Before</p><!DOCTYPE html") == "Before"
    assert html_to_text("<p>a < b and c > d</p>") == "a < b and c > d"


def test_menus_and_hidden_parts_are_left_out_but_body_text_is_kept():
    page = """<html><head><title>Blog</title></head><body>
    <nav><ul><li><a href="/">Home</a></li><li><a href="/about">About</a></li></ul></nav>
    <div role="navigation">Breadcrumbs &gt; Posts</div>
    <header><h1>Why harbours matter</h1></header>
    <main><p>Harbours connect towns to the sea.</p><div hidden>Cookie banner text</div>
    <p aria-hidden="true">Decorative caption</p><p>They also shelter boats.</p></main>
    <script>track();</script><footer><p>Written by Ana, 2024.</p></footer></body></html>"""
    text = html_to_text(page)
    assert text == ("# Why harbours matter\n\nHarbours connect towns to the sea.\n\n"
                    "They also shelter boats.\n\nWritten by Ana, 2024.")
    # A <nav> never closed ends where the page's content starts.
    unclosed = "<nav><a>Home</a> <a>About</a><main><p>The article itself.</p></main>"
    assert html_to_text(unclosed) == "The article itself."
    # A page that is nothing but navigation is read rather than called empty.
    assert html_to_text("<nav><a>Home</a> <a>Contact</a></nav>") == "Home Contact"


def test_deeply_nested_html_does_not_blow_the_stack():
    depth = 20000
    page = "<div><span>" * depth + "<p>Deep text.</p>" + "</span></div>" * depth
    assert html_to_text(page) == "Deep text."
    unclosed = "<div>" * depth + "Still read." + "<b>" * depth
    assert html_to_text(unclosed) == "Still read."


def test_html_file_without_closing_head_reads_end_to_end(tmp_path: Path):
    path = tmp_path / "page.html"
    path.write_bytes("<html><head><meta charset=\"windows-1252\"><title>Caf\xe9</title>"
                     "<p>Fran\xe7ois ouvre le caf\xe9 \xe0 8 h.</p>".encode("cp1252"))
    document = read_document(path)
    assert (document.text, document.encoding) == ("François ouvre le café à 8 h.", "cp1252")
