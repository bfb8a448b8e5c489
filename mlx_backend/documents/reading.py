"""Plain text out of the documents people drop on the window: PDF, Word, HTML, text and code.

This is the entry: ``stat`` checks (type, size) and content sniffing here, then the reader for
the type (``pdf``, ``word``, ``html_page``; ``decoding`` for text and code). The content decides
over the name: a PDF saved as .docx is read as a PDF, with a note saying so.

Every failure a user can cause (a password-protected or scanned PDF, an empty, truncated, binary,
huge, unreadable or unsupported file, a broken link, a pipe, device or socket) raises
``DocumentError`` with one plain sentence naming the file; a pipe is never opened (that would
block). A folder given to ``read_documents`` is read as the supported documents inside it.
Nothing here ever touches the network (HTML links and images are never followed or fetched).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Literal, Optional

from mlx_backend.documents.decoding import SNIFF_BYTES, decode_text, looks_binary, normalize_newlines
from mlx_backend.documents.html_page import html_to_text
from mlx_backend.documents.pdf import read_pdf
from mlx_backend.documents.word import read_docx
from mlx_backend.errors import DocumentError

log = logging.getLogger(__name__)

# Refused before anything is read: a 500 MB file must not be slurped into memory to say "no".
MAX_DOCUMENT_BYTES = 200 * 1024 * 1024
# A dropped folder: how deep and how many files are looked at, and the size of all its
# documents together (the same limit as one document).
MAX_FOLDER_DEPTH = 8
MAX_FOLDER_FILES = 500
MAX_FOLDER_DOCUMENTS = 200

DocumentKind = Literal["pdf", "docx", "html", "markdown", "text", "code"]

SUPPORTED_DESCRIPTION = "PDF, Word (.docx), HTML, Markdown, plain text and source code"

_PDF_SUFFIXES = frozenset({".pdf"})
_DOCX_SUFFIXES = frozenset({".docx", ".docm"})
_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
_MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd", ".rst", ".org", ".adoc"})
_TEXT_SUFFIXES = frozenset({
    ".txt", ".text", ".log", ".csv", ".tsv", ".tex", ".bib", ".srt", ".vtt", ".json", ".jsonl",
    ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".xml", ".plist", ".env", ".properties",
})
# Source code: the suffix names the language for the prompt's code fence.
_CODE_LANGUAGES: dict[str, str] = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".jsx": "jsx",
    ".ts": "typescript", ".tsx": "tsx", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
    ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".m": "objectivec", ".mm": "objectivec",
    ".swift": "swift", ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala",
    ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".pl": "perl", ".lua": "lua",
    ".r": "r", ".jl": "julia", ".sh": "bash", ".bash": "bash", ".zsh": "zsh", ".fish": "fish",
    ".ps1": "powershell", ".sql": "sql", ".css": "css", ".scss": "scss", ".less": "less",
    ".vue": "vue", ".svelte": "svelte", ".dart": "dart", ".cs": "csharp", ".fs": "fsharp",
    ".hs": "haskell", ".ml": "ocaml", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang",
    ".clj": "clojure", ".el": "elisp", ".lisp": "lisp", ".zig": "zig", ".nim": "nim",
    ".cmake": "cmake", ".gradle": "groovy", ".groovy": "groovy", ".proto": "protobuf",
    ".graphql": "graphql", ".tf": "hcl", ".mk": "makefile", ".asm": "asm", ".s": "asm",
}
# Types people plausibly drop that we cannot read: named, so the message says what they dropped.
_UNSUPPORTED_NAMES: dict[str, str] = {
    ".doc": "Word 97-2003 documents (.doc)", ".rtf": "RTF documents", ".pages": "Pages documents",
    ".odt": "OpenDocument text files", ".epub": "EPUB books", ".xls": "Excel spreadsheets",
    ".xlsx": "Excel spreadsheets", ".numbers": "Numbers spreadsheets", ".ods": "spreadsheets",
    ".ppt": "PowerPoint presentations", ".pptx": "PowerPoint presentations",
    ".key": "Keynote presentations", ".png": "images", ".jpg": "images", ".jpeg": "images",
    ".gif": "images", ".heic": "images", ".tif": "images", ".tiff": "images", ".webp": "images",
    ".bmp": "images", ".svg": "images", ".mp3": "audio files", ".m4a": "audio files",
    ".wav": "audio files", ".mp4": "videos", ".mov": "videos", ".zip": "archives",
    ".gz": "archives", ".tar": "archives", ".7z": "archives", ".dmg": "disk images",
    ".app": "applications", ".exe": "programs", ".so": "libraries", ".dylib": "libraries",
    ".safetensors": "model weights", ".gguf": "model weights", ".bin": "binary files",
}


@dataclass(frozen=True)
class Document:
    """One readable document. ``tokens`` is filled in by the summary planner (``with_tokens``)."""

    name: str
    path: Path
    kind: DocumentKind
    text: str
    pages: Optional[int] = None
    tokens: Optional[int] = None
    # The code-fence language of a source file ("python"), else None.
    language: Optional[str] = None
    # The text encoding a plain-text or HTML file was decoded from.
    encoding: Optional[str] = None
    # What the user should know about how the file was read, in plain words ("Pages 3-9 have
    # no readable text (scanned?)", "One table could not be read and was skipped").
    notes: tuple[str, ...] = ()
    # Where each page begins in ``text`` (character offsets, first 0), when the reader knows
    # (a PDF reader can fill it): summaries in parts then say which pages each comes from.
    page_starts: tuple[int, ...] = ()

    def with_tokens(self, tokens: int) -> "Document":
        return replace(self, tokens=tokens)

    @property
    def characters(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class DocumentFailure:
    path: Path
    message: str
    # The dropped folder the file was found in (None: the file itself was dropped).
    folder: Optional[Path] = None


@dataclass(frozen=True)
class DocumentBatch:
    """The result of reading several files: the good ones, and why each bad one was refused.

    ``skipped``: files inside a dropped folder that were not even tried (unsupported type, over
    the folder's limits), with the reason; ``folders``: one line per dropped folder saying what
    was found ("Reports: 5 documents read, 2 files skipped")."""

    documents: tuple[Document, ...]
    failures: tuple[DocumentFailure, ...] = field(default=())
    skipped: tuple[DocumentFailure, ...] = field(default=())
    folders: tuple[str, ...] = field(default=())

    @property
    def messages(self) -> list[str]:
        """Everything the user should see about this batch besides the documents themselves."""
        return (list(self.folders) + [failure.message for failure in self.failures]
                + [skip.message for skip in self.skipped])


def read_documents(paths: Iterable[str | Path], *, max_bytes: int = MAX_DOCUMENT_BYTES,
                   cancel: Optional[Callable[[], bool]] = None) -> DocumentBatch:
    """Read several files; one bad file is reported in ``failures`` and does not stop the rest.

    A folder is read as the supported documents inside it (see ``folder_documents``)."""
    documents: list[Document] = []
    failures: list[DocumentFailure] = []
    skipped: list[DocumentFailure] = []
    folders: list[str] = []
    seen: set[Path] = set()

    def read_one(path: Path, folder: Optional[Path]) -> bool:
        key = _identity(path)
        if key in seen:  # the same file dropped twice is read once
            return False
        seen.add(key)
        try:
            documents.append(read_document(path, max_bytes=max_bytes))
            return True
        except DocumentError as error:
            failures.append(DocumentFailure(path, str(error), folder))
            return False

    for raw in paths:
        if cancel is not None and cancel():
            break
        path = Path(raw).expanduser()
        if _is_folder(path):
            listing = folder_documents(path, max_bytes=max_bytes)
            skipped += listing.skipped
            read = sum(read_one(file, path) for file in listing.files
                       if not (cancel is not None and cancel()))
            failed = sum(1 for failure in failures if failure.folder == path)
            folders.append(_folder_line(path, read, failed, len(listing.skipped), listing.hidden))
        else:
            read_one(path, None)
    return DocumentBatch(tuple(documents), tuple(failures), tuple(skipped), tuple(folders))


@dataclass(frozen=True)
class FolderListing:
    """The files of a dropped folder worth trying, and those left out (with the reason)."""

    files: tuple[Path, ...]
    skipped: tuple[DocumentFailure, ...]
    hidden: int = 0


def folder_documents(folder: Path, *, max_bytes: int = MAX_DOCUMENT_BYTES,
                     max_depth: int = MAX_FOLDER_DEPTH, max_files: int = MAX_FOLDER_FILES,
                     max_documents: int = MAX_FOLDER_DOCUMENTS) -> FolderListing:
    """The supported documents in ``folder`` and its subfolders, in name order.

    Hidden files and folders (".git", ".DS_Store") are left out silently (counted); symbolic
    links to folders are not followed (no loops); at most ``max_depth`` levels, ``max_files``
    entries looked at and ``max_documents`` documents adding up to ``max_bytes``."""
    files: list[Path] = []
    skipped: list[DocumentFailure] = []
    hidden = 0
    looked = 0
    total = 0
    visited: set[tuple[int, int]] = set()
    label = folder.name or str(folder)

    def skip(path: Path, why: str) -> None:
        skipped.append(DocumentFailure(path, f"{_relative(path, folder)} (in {label}) was skipped: {why}.", folder))

    def walk(directory: Path, depth: int) -> None:
        nonlocal hidden, looked, total
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in visited:
                return
            visited.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name.lower())
        except OSError as error:
            skip(directory, f"the folder can't be opened ({error.strerror or error})")
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                hidden += 1
                continue
            looked += 1
            if looked > max_files:
                skip(path, f"the folder has more than {max_files:,} files; only the first were looked at")
                return
            try:
                if entry.is_symlink() and entry.is_dir():
                    skip(path, "it is a link to another folder, which is not followed")
                    continue
                if entry.is_dir():
                    if depth >= max_depth:
                        skip(path, f"it is more than {max_depth} folders deep")
                    else:
                        walk(path, depth + 1)
                    continue
                size = entry.stat().st_size if entry.is_file() else 0
            except OSError as error:
                skip(path, f"it can't be opened ({error.strerror or error})")
                continue
            why = _unsupported_reason(path)
            if why:
                skip(path, why)
            elif len(files) >= max_documents:
                skip(path, f"only the first {max_documents} documents of a folder are read")
            elif total + size > max_bytes:
                skip(path, f"the folder's documents add up to more than {_megabytes(max_bytes)}")
            else:
                files.append(path)
                total += size

    walk(folder, 1)
    return FolderListing(tuple(files), tuple(skipped), hidden)


def _unsupported_reason(path: Path) -> Optional[str]:
    """Why a file in a folder isn't worth trying (None: try it). Unknown suffixes are tried
    only when the name has none (README, Makefile): a folder's .o or .pyc files are noise."""
    suffix = path.suffix.lower()
    if suffix in _UNSUPPORTED_NAMES:
        return f"{_UNSUPPORTED_NAMES[suffix]} aren't supported"
    known = (_PDF_SUFFIXES | _DOCX_SUFFIXES | _HTML_SUFFIXES | _MARKDOWN_SUFFIXES | _TEXT_SUFFIXES
             | frozenset(_CODE_LANGUAGES))
    if suffix and suffix not in known:
        return f"“{suffix}” files aren't supported"
    return None


def _folder_line(folder: Path, read: int, failed: int, skipped: int, hidden: int) -> str:
    label = folder.name or str(folder)
    parts = [f"{_count(read, 'document')} read"]
    if failed:
        parts.append(f"{_count(failed, 'file')} refused")
    if skipped:
        parts.append(f"{_count(skipped, 'file')} skipped")
    if hidden:
        parts.append(f"{_count(hidden, 'hidden file')} left out")
    return f"Folder {label}: " + ", ".join(parts) + "."


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name


def _identity(path: Path) -> object:
    try:
        info = path.stat()
        return (info.st_dev, info.st_ino)
    except OSError:
        return path


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except OSError:
        return False


def read_document(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """Extract the text of one file, or raise ``DocumentError`` saying plainly why not."""
    path = Path(path).expanduser()
    name = path.name or str(path)
    _check_file(path, max_bytes)
    head = _head(path)
    try:
        return _read_by_kind(path, name, head)
    except DocumentError:
        raise
    except Exception as error:  # noqa: BLE001 - a reader's bug must not read as a crash
        log.exception("reading %s failed", path)
        raise DocumentError(f"{name} couldn't be read ({type(error).__name__}).") from None


def _read_by_kind(path: Path, name: str, head: bytes) -> Document:
    suffix = path.suffix.lower()
    content = _content_kind(path, head)
    # The content decides, not the name: a PDF saved as .docx is still read as a PDF.
    if content == "pdf" or (content is None and suffix in _PDF_SUFFIXES):
        pdf = read_pdf(path)
        notes = _renamed(suffix, _PDF_SUFFIXES, "a PDF") + pdf.notes
        return _finish(Document(name, path, "pdf", pdf.text, pages=pdf.pages, notes=notes, page_starts=pdf.page_starts))
    if content == "docx":
        text, notes = read_docx(path)
        notes = _renamed(suffix, _DOCX_SUFFIXES, "a Word document") + notes
        return _finish(Document(name, path, "docx", text, notes=notes))
    if suffix in _UNSUPPORTED_NAMES:
        raise DocumentError(
            f"{name}: {_UNSUPPORTED_NAMES[suffix]} aren't supported. "
            f"Qwen Desk reads {SUPPORTED_DESCRIPTION}."
        )
    if content == "zip":
        raise DocumentError(f"{name} is a zip archive, not a document. Unzip it and drop the files inside.")
    if content == "ole":
        raise DocumentError(
            f"{name} is an older Office file (Word 97-2003 or another Office format) or a "
            "password-protected Word document. Open it in Word or Pages, save it as .docx without "
            "a password, and drop that instead."
        )
    if suffix in _DOCX_SUFFIXES:
        raise DocumentError(f"{name} isn't a Word document (it has no .docx content; was it renamed?).")
    data = _read_bytes(path)
    if suffix in _HTML_SUFFIXES:
        text, encoding = decode_text(data, name, html=True)
        return _finish(Document(name, path, "html", html_to_text(text), encoding=encoding))
    if suffix in _MARKDOWN_SUFFIXES:
        kind: DocumentKind = "markdown"
    elif suffix in _CODE_LANGUAGES:
        kind = "code"
    elif suffix in _TEXT_SUFFIXES:
        kind = "text"
    else:
        # Unknown suffix (or none: README, Makefile): accept it only if it really is text.
        if looks_binary(data[:SNIFF_BYTES]):
            what = f"“{suffix}” files" if suffix else "files of this type"
            raise DocumentError(
                f"{name}: {what} aren't supported (it isn't text). "
                f"Qwen Desk reads {SUPPORTED_DESCRIPTION}."
            )
        kind = "text"
    text, encoding = decode_text(data, name)
    return _finish(
        Document(name, path, kind, normalize_newlines(text), language=_CODE_LANGUAGES.get(suffix),
                 encoding=encoding)
    )


# --- files -----------------------------------------------------------------------------------

_HEAD_BYTES = 1024


def _check_file(path: Path, max_bytes: int) -> None:
    """Existence, type and size from ``stat`` alone: a huge file is refused without reading it,
    and a pipe is never opened (opening a FIFO blocks until someone writes to it)."""
    name = path.name or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            target = os.readlink(path)
            raise DocumentError(f"{name} is a link to {target}, which doesn't exist (was it moved or deleted?).") from None
        raise DocumentError(f"{name}: the file doesn't exist (was it moved or deleted?).") from None
    except OSError as error:
        raise DocumentError(f"{name}: the file can't be opened ({error.strerror or error}).") from None
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise DocumentError(f"{name} is a folder; drop the documents inside it instead.")
    if stat.S_ISFIFO(mode):
        raise DocumentError(f"{name} is a pipe (FIFO), not a document.")
    if stat.S_ISSOCK(mode):
        raise DocumentError(f"{name} is a socket, not a document.")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise DocumentError(f"{name} is a device, not a document.")
    if not stat.S_ISREG(mode):
        raise DocumentError(f"{name} isn't a regular file.")
    if info.st_size == 0:
        raise DocumentError(f"{name} is empty.")
    if info.st_size > max_bytes:
        raise DocumentError(
            f"{name} is {_megabytes(info.st_size)}; Qwen Desk reads documents up to "
            f"{_megabytes(max_bytes)}. Split it into smaller files."
        )


def _head(path: Path) -> bytes:
    """The first bytes (also the check that the file can be read at all)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    except OSError as error:
        raise DocumentError(f"{path.name}: the file can't be read ({error.strerror or error}).") from None


def _content_kind(path: Path, head: bytes) -> Optional[str]:
    """What the bytes are, whatever the name says: "pdf", "docx", "zip", "ole" or None."""
    if head.lstrip()[:5] == b"%PDF-":
        return "pdf"
    if head[:4] == b"\xd0\xcf\x11\xe0":
        return "ole"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.NameToInfo
                return "docx" if ("word/document.xml" in names or "[Content_Types].xml" in names
                                  and any(n.startswith("word/") for n in names)) else "zip"
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            # A truncated .docx: its reader says it's damaged; anything else is not a document.
            return "docx" if path.suffix.lower() in _DOCX_SUFFIXES else "zip"
    return None


def _renamed(suffix: str, expected: frozenset[str], what: str) -> tuple[str, ...]:
    if suffix in expected:
        return ()
    named = f"named “{suffix}”" if suffix else "named without a type"
    return (f"The file is {named} but is {what}; it was read as {what}.",)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DocumentError(f"{path.name}: the file can't be read ({error.strerror or error}).") from None


def _finish(document: Document) -> Document:
    text = document.text.strip()
    if not text:
        raise DocumentError(f"{document.name} has no text to read.")
    # Page offsets follow the text's own start, now without its leading blank lines.
    shift = len(document.text) - len(document.text.lstrip())
    starts = tuple(max(0, start - shift) for start in document.page_starts)
    return replace(document, text=text, page_starts=starts)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"
