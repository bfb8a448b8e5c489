"""Plain text out of the documents people drop on the window: PDF, Word, HTML, text and code.

This is the entry: size checks and type sniffing here, then the reader for the type
(``pdf``, ``word``, ``html_page``; ``decoding`` for text and code).

Every failure a user can cause (a password-protected or scanned PDF, an empty, binary, huge or
unsupported file) raises ``DocumentError`` with one plain sentence naming the file; nothing here
ever touches the network (HTML links and images are never followed or fetched).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Literal, Optional

from mlx_backend.documents.decoding import SNIFF_BYTES, decode_text, looks_binary, normalize_newlines
from mlx_backend.documents.html_page import html_to_text
from mlx_backend.documents.pdf import read_pdf
from mlx_backend.documents.word import read_docx
from mlx_backend.errors import DocumentError

# Refused before anything is read: a 500 MB file must not be slurped into memory to say "no".
MAX_DOCUMENT_BYTES = 200 * 1024 * 1024

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

    def with_tokens(self, tokens: int) -> "Document":
        return replace(self, tokens=tokens)

    @property
    def characters(self) -> int:
        return len(self.text)


@dataclass(frozen=True)
class DocumentFailure:
    path: Path
    message: str


@dataclass(frozen=True)
class DocumentBatch:
    """The result of reading several files: the good ones, and why each bad one was refused."""

    documents: tuple[Document, ...]
    failures: tuple[DocumentFailure, ...] = field(default=())


def read_documents(paths: Iterable[str | Path], *, max_bytes: int = MAX_DOCUMENT_BYTES) -> DocumentBatch:
    """Read several files; one bad file is reported in ``failures`` and does not stop the rest."""
    documents: list[Document] = []
    failures: list[DocumentFailure] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        key = path.resolve() if path.exists() else path
        if key in seen:  # the same file dropped twice is read once
            continue
        seen.add(key)
        try:
            documents.append(read_document(path, max_bytes=max_bytes))
        except DocumentError as error:
            failures.append(DocumentFailure(path, str(error)))
    return DocumentBatch(tuple(documents), tuple(failures))


def read_document(path: str | Path, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> Document:
    """Extract the text of one file, or raise ``DocumentError`` saying plainly why not."""
    path = Path(path).expanduser()
    name = path.name
    _check_file(path, max_bytes)
    suffix = path.suffix.lower()
    if suffix in _PDF_SUFFIXES:
        pdf = read_pdf(path)
        return _finish(Document(name, path, "pdf", pdf.text, pages=pdf.pages, notes=pdf.notes))
    if suffix in _DOCX_SUFFIXES:
        return _finish(Document(name, path, "docx", read_docx(path)))
    if suffix in _UNSUPPORTED_NAMES:
        raise DocumentError(
            f"{name}: {_UNSUPPORTED_NAMES[suffix]} aren't supported. "
            f"Qwen Desk reads {SUPPORTED_DESCRIPTION}."
        )
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


def _check_file(path: Path, max_bytes: int) -> None:
    """Existence, type and size from ``stat`` alone: a huge file is refused without reading it."""
    name = path.name or str(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DocumentError(f"{name}: the file doesn't exist (was it moved or deleted?).") from None
    except OSError as error:
        raise DocumentError(f"{name}: the file can't be opened ({error.strerror or error}).") from None
    if path.is_dir():
        raise DocumentError(f"{name} is a folder; drop the documents inside it instead.")
    if info.st_size == 0:
        raise DocumentError(f"{name} is empty.")
    if info.st_size > max_bytes:
        raise DocumentError(
            f"{name} is {_megabytes(info.st_size)}; Qwen Desk reads documents up to "
            f"{_megabytes(max_bytes)}. Split it into smaller files."
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DocumentError(f"{path.name}: the file can't be read ({error.strerror or error}).") from None


def _finish(document: Document) -> Document:
    text = document.text.strip()
    if not text:
        raise DocumentError(f"{document.name} has no text to read.")
    return replace(document, text=text)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"
