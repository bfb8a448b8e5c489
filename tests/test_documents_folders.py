"""A dropped folder is read as the documents inside it: recursively, within limits, hidden
files and link loops left out, and every skipped file named with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_backend.documents.reading import folder_documents, read_documents


def _write(path: Path, text: str = "Some words about the harbour and its ships.") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "Project"
    _write(root / "README")  # no suffix, but text: tried
    _write(root / "notes.md", "# Notes\n\nThe first meeting.")
    _write(root / "src" / "main.py", "print('hello')\n")
    _write(root / "src" / "deep" / "er" / "still.txt")
    _write(root / ".git" / "config")  # hidden folder: not walked
    _write(root / ".hidden.md")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "build.o").write_bytes(b"\x7fELF")
    (root / "empty.txt").write_bytes(b"")
    (root / "src" / "loop").symlink_to(root, target_is_directory=True)  # a link back up
    return root


def test_a_folder_reads_its_documents_and_lists_what_it_skipped(tree: Path):
    batch = read_documents([tree])
    assert sorted(d.name for d in batch.documents) == ["README", "main.py", "notes.md", "still.txt"]
    assert [(f.path.name, f.message, f.folder) for f in batch.failures] == [
        ("empty.txt", "empty.txt is empty.", tree)]
    reasons = {skip.path.name: skip.message for skip in batch.skipped}
    assert reasons == {
        "build.o": "build.o (in Project) was skipped: “.o” files aren't supported.",
        "logo.png": "logo.png (in Project) was skipped: images aren't supported.",
        "loop": "src/loop (in Project) was skipped: it is a link to another folder, which is not followed.",
    }
    assert batch.folders == ("Folder Project: 4 documents read, 1 file refused, 3 files skipped, "
                             "2 hidden files left out.",)
    assert batch.messages[0] == batch.folders[0]


def test_a_folder_and_a_file_inside_it_are_read_once(tree: Path):
    batch = read_documents([tree / "notes.md", tree])
    assert [d.name for d in batch.documents].count("notes.md") == 1


def test_depth_count_and_size_limits(tree: Path):
    shallow = folder_documents(tree, max_depth=2)
    assert "still.txt" not in [f.name for f in shallow.files]
    assert any(s.message == "src/deep (in Project) was skipped: it is more than 2 folders deep." for s in shallow.skipped)

    few = folder_documents(tree, max_documents=2)
    assert len(few.files) == 2
    assert any("only the first 2 documents of a folder are read" in s.message for s in few.skipped)

    small = folder_documents(tree, max_bytes=60)
    assert sum(f.stat().st_size for f in small.files) <= 60
    assert any("the folder's documents add up to more than 0 MB" in s.message for s in small.skipped)

    looked = folder_documents(tree, max_files=3)
    assert any("the folder has more than 3 files; only the first were looked at" in s.message for s in looked.skipped)


def test_an_empty_folder_says_so(tmp_path: Path):
    (tmp_path / "Empty").mkdir()
    batch = read_documents([tmp_path / "Empty"])
    assert batch.documents == () and batch.folders == ("Folder Empty: 0 documents read.",)


def test_reading_stops_when_cancelled(tree: Path):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 2

    batch = read_documents([tree], cancel=cancel)
    assert len(batch.documents) < 4
