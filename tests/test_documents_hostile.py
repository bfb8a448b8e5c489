"""Everything a user can drop that isn't a good document: each is a clear DocumentError naming
the file, never another exception, a hang (FIFO) or a read of a huge file. The corpus is
written at test time."""

from __future__ import annotations

import builtins
import os
import shutil
import socket
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from mlx_backend.documents.reading import MAX_DOCUMENT_BYTES, read_document
from mlx_backend.errors import DocumentError
from tests.support.docx_parts import p, write_docx
from tests.support.documents import write_long_pdf


def _docx(folder: Path, name: str = "fine.docx") -> Path:
    return write_docx(folder / name, p("A real Word paragraph about the harbour."))


def _truncated_docx(folder: Path) -> Path:
    whole = _docx(folder, "whole.docx").read_bytes()
    path = folder / "truncated.docx"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _pdf_named_docx(folder: Path) -> Path:
    pdf = write_long_pdf(folder / "real.pdf", page_count=1)
    path = folder / "report.docx"
    path.write_bytes(pdf.read_bytes())
    return path


def _plain_zip_named_pdf(folder: Path) -> Path:
    path = folder / "photos.pdf"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("holiday.txt", "not a document")
    return path


def _binary_named_txt(folder: Path) -> Path:
    path = folder / "notes.txt"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _ole_named_docx(folder: Path) -> Path:
    path = folder / "locked.docx"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 4096)
    return path


def _deeply_nested(folder: Path) -> Path:
    depth = 5_000
    body = "<w:sdt><w:sdtContent>" * depth + p("deep") + "</w:sdtContent></w:sdt>" * depth
    return write_docx(folder / "nested.docx", body)


def _huge_sparse(folder: Path) -> Path:
    path = folder / "huge.txt"
    with open(path, "wb") as handle:
        handle.truncate(MAX_DOCUMENT_BYTES + 1)  # sparse: no disk used, and never read
    return path


def _broken_link(folder: Path) -> Path:
    path = folder / "gone.pdf"
    path.symlink_to(folder / "deleted.pdf")
    return path


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.txt"
    os.mkfifo(path)
    return path


def _empty(folder: Path) -> Path:
    path = folder / "empty.docx"
    path.write_bytes(b"")
    return path


def _folder(folder: Path) -> Path:
    path = folder / "Reports"
    path.mkdir()
    return path


CORPUS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty", _empty, r"^empty\.docx is empty\.$"),
    ("truncated", _truncated_docx, r"^truncated\.docx isn't a readable Word document \(it is damaged or incomplete\)\.$"),
    ("zip named .pdf", _plain_zip_named_pdf, r"^photos\.pdf is a zip archive, not a document\. Unzip it"),
    ("binary named .txt", _binary_named_txt, r"^notes\.txt looks like a binary file, not text\.$"),
    ("OLE named .docx", _ole_named_docx, r"^locked\.docx is an older Office file .* or a password-protected Word document"),
    ("deeply nested", _deeply_nested, r"^nested\.docx can't be read safely: it is nested more than 256 levels deep\.$"),
    ("huge", _huge_sparse, r"^huge\.txt is 200 MB; Qwen Desk reads documents up to 200 MB\. Split it"),
    ("broken symlink", _broken_link, r"^gone\.pdf is a link to .*deleted\.pdf, which doesn't exist"),
    ("FIFO", _fifo, r"^pipe\.txt is a pipe \(FIFO\), not a document\.$"),
    ("folder", _folder, r"^Reports is a folder; drop the documents inside it instead\.$"),
]


@pytest.mark.parametrize("make, message", [(make, message) for _, make, message in CORPUS],
                         ids=[label for label, _, _ in CORPUS])
def test_hostile_input_is_a_clear_document_error(tmp_path: Path, make, message: str):
    path = make(tmp_path)
    with pytest.raises(DocumentError, match=message):
        read_document(path)


def test_a_pdf_named_docx_is_read_as_a_pdf_with_a_note(tmp_path: Path):
    document = read_document(_pdf_named_docx(tmp_path))
    assert document.kind == "pdf" and document.pages == 1 and document.text
    assert document.notes[0] == "The file is named “.docx” but is a PDF; it was read as a PDF."


def test_a_word_document_named_pdf_is_read_as_word_with_a_note(tmp_path: Path):
    path = tmp_path / "minutes.pdf"
    path.write_bytes(_docx(tmp_path).read_bytes())
    document = read_document(path)
    assert document.kind == "docx" and "harbour" in document.text
    assert document.notes == ("The file is named “.pdf” but is a Word document; it was read as a Word document.",)


def test_devices_and_sockets_are_refused_without_opening_them(tmp_path: Path):
    with pytest.raises(DocumentError, match=r"^null is a device, not a document\.$"):
        read_document("/dev/null")
    short = Path(tempfile.mkdtemp(prefix="qd"))  # a socket path must be short
    try:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(short / "chat.sock"))
        with pytest.raises(DocumentError, match=r"^chat\.sock is a socket, not a document\.$"):
            read_document(short / "chat.sock")
        server.close()
    finally:
        shutil.rmtree(short)


def test_an_unreadable_file_says_so(tmp_path: Path, monkeypatch):
    path = tmp_path / "secret.md"
    path.write_text("# Private\n\nKeep out.", encoding="utf-8")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the OS answer as it would for a user
        real_open = builtins.open

        def refusing_open(file, *args, **kwargs):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(DocumentError, match=r"^secret\.md: the file can't be read \(Permission denied\)\.$"):
        read_document(path)


def test_nothing_but_document_errors_escape(tmp_path: Path):
    """Every corpus item through read_documents: failures listed, nothing raised."""
    from mlx_backend.documents.reading import read_documents

    paths = []
    for label, make, _ in CORPUS:
        folder = tmp_path / label.replace(" ", "_").replace(".", "")
        folder.mkdir()
        paths.append(make(folder))
    batch = read_documents(paths)
    assert batch.documents == ()
    # The folder is read as a folder (empty), every other item is a failure with its message.
    assert len(batch.failures) == len(CORPUS) - 1
    assert batch.folders == ("Folder Reports: 0 documents read.",)
