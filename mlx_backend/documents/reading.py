"""Plain text out of the documents people drop on the window: PDF, Word, HTML, text and code.

Every failure a user can cause (a password-protected or scanned PDF, an empty, binary, huge or
unsupported file) raises ``DocumentError`` with one plain sentence naming the file; nothing here
ever touches the network (HTML links and images are never followed or fetched).
"""

from __future__ import annotations

import codecs
import re
import zipfile
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Literal, Optional

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
# Bytes looked at to tell text from binary: enough to be sure, cheap on a 200 MB log.
_SNIFF_BYTES = 64 * 1024


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
        return _read_pdf(path)
    if suffix in _DOCX_SUFFIXES:
        return _read_docx(path)
    if suffix in _UNSUPPORTED_NAMES:
        raise DocumentError(
            f"{name}: {_UNSUPPORTED_NAMES[suffix]} aren't supported. "
            f"Qwen Desk reads {SUPPORTED_DESCRIPTION}."
        )
    data = _read_bytes(path)
    if suffix in _HTML_SUFFIXES:
        text, encoding = _decode_text(data, name, html=True)
        return _finish(Document(name, path, "html", html_to_text(text), encoding=encoding))
    if suffix in _MARKDOWN_SUFFIXES:
        kind: DocumentKind = "markdown"
    elif suffix in _CODE_LANGUAGES:
        kind = "code"
    elif suffix in _TEXT_SUFFIXES:
        kind = "text"
    else:
        # Unknown suffix (or none: README, Makefile): accept it only if it really is text.
        if _looks_binary(data[:_SNIFF_BYTES]):
            what = f"“{suffix}” files" if suffix else "files of this type"
            raise DocumentError(
                f"{name}: {what} aren't supported (it isn't text). "
                f"Qwen Desk reads {SUPPORTED_DESCRIPTION}."
            )
        kind = "text"
    text, encoding = _decode_text(data, name)
    return _finish(
        Document(name, path, kind, _normalize_newlines(text), language=_CODE_LANGUAGES.get(suffix),
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


def _normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- text decoding ---------------------------------------------------------------------------

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Control characters that never appear in real text (tab, newlines, form feed and escape do).
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


def _looks_binary(sample: bytes) -> bool:
    if any(sample.startswith(bom) for bom, _ in _BOMS):
        return False
    if b"\x00" in sample:
        return True
    try:
        # A multi-byte character may be cut at the sample's end: ignore only that tail.
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start >= len(sample) - 3:
            text = sample[: error.start].decode("utf-8")
        else:
            best = _charset_best(sample)
            if best is None:
                return True
            text = str(best)
    return len(_CONTROL_CHARS.findall(text[:_SNIFF_BYTES])) > max(2, len(text[:_SNIFF_BYTES]) // 200)


# Single-byte encodings are often indistinguishable on short or accent-light text; where the
# detector finds Windows-1252 about as plausible as its favourite (cp1257 for French, say), the
# most common legacy encoding of Western text wins.
_PREFERRED_LEGACY = "cp1252"
_LEGACY_TOLERANCE = 0.1


def _charset_best(data: bytes):
    from charset_normalizer import from_bytes  # imported lazily: only non-UTF-8 files need it

    matches = from_bytes(data)
    best = matches.best()
    if best is None or _PREFERRED_LEGACY in best.could_be_from_charset:
        return best
    for match in matches:
        if (match.encoding == _PREFERRED_LEGACY
                and match.chaos <= best.chaos + _LEGACY_TOLERANCE
                and match.coherence >= best.coherence - _LEGACY_TOLERANCE):
            return match
    return best


def _decode_text(data: bytes, name: str, *, html: bool = False) -> tuple[str, str]:
    """Bytes to text: BOM, then UTF-8, then (HTML) the page's declared charset, then detection."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    if _looks_binary(data[:_SNIFF_BYTES]):
        raise DocumentError(f"{name} looks like a binary file, not text.")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if html:
        declared = _META_CHARSET.search(data[:4096])
        if declared:
            encoding = declared.group(1).decode("ascii", "replace")
            try:
                return data.decode(encoding), codecs.lookup(encoding).name
            except (LookupError, UnicodeDecodeError):
                pass  # a wrong declaration is common; fall back to detection
    best = _charset_best(data)
    if best is None:
        raise DocumentError(f"{name} looks like a binary file, not text.")
    return str(best), best.encoding


# --- PDF -------------------------------------------------------------------------------------


def _read_pdf(path: Path) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    name = path.name
    with open(path, "rb") as handle:
        if not handle.read(1024).lstrip().startswith(b"%PDF"):
            raise DocumentError(f"{name} isn't a valid PDF file.")
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            # Many PDFs carry only an owner password (printing/copy restrictions) and open
            # with the empty user password; anything else really is locked.
            try:
                opened = reader.decrypt("")
            except (DependencyError, NotImplementedError, PyPdfError):
                opened = 0
            if not opened:
                raise DocumentError(
                    f"{name} is password-protected. Open it in Preview, export an unprotected "
                    "copy, and drop that instead."
                )
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as error:
        raise DocumentError(f"{name} isn't a readable PDF ({type(error).__name__}).") from None
    if not pages:
        raise DocumentError(f"{name} has no pages.")
    text = "\n\n".join(_normalize_newlines(page).strip() for page in pages if page.strip())
    if not text.strip():
        raise DocumentError(
            f"{name} has no text layer ({_plural(len(pages), 'page')} of images, probably a scan). "
            "Run text recognition (OCR) on it first, for example in Preview or Acrobat."
        )
    return _finish(Document(name, path, "pdf", text, pages=len(pages)))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# --- Word ------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"heading\s*(\d)", re.IGNORECASE)


def _read_docx(path: Path) -> Document:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    name = path.name
    try:
        document = docx.Document(str(path))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            block = _docx_table(item) if isinstance(item, Table) else _docx_paragraph(item)
            if not block:
                continue
            if blocks and _is_list_item(block) and _is_list_item(blocks[-1].rsplit("\n", 1)[-1]):
                blocks[-1] += "\n" + block  # one list, not a paragraph per item
            else:
                blocks.append(block)
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise DocumentError(f"{name} isn't a readable Word document ({type(error).__name__}).") from None
    if not blocks:
        raise DocumentError(f"{name} has no text to read.")
    return _finish(Document(name, path, "docx", "\n\n".join(blocks)))


def _is_list_item(block: str) -> bool:
    return block.startswith(("- ", "1. "))


def _docx_paragraph(paragraph) -> str:
    text = paragraph.text.strip()
    if not text:
        return ""
    style = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style == "Title":
        return f"# {text}"
    heading = _HEADING_STYLE.fullmatch(style.strip())
    if heading:
        # Title takes "#", so Heading 1 is "##": the document's outline keeps its shape.
        return "#" * min(int(heading.group(1)) + 1, 6) + " " + text
    if style.startswith("List Number"):
        return f"1. {text}"
    if style.startswith("List"):
        return f"- {text}"
    return text


def _docx_table(table) -> str:
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans: keep it once.
            if previous is not None and cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()).replace("|", "\\|"))
        if any(cells):
            rows.append(cells)
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join("---" for _ in rows[0]) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows[1:]]
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "head", "svg", "canvas",
                           "iframe", "object", "button", "select", "textarea"})
_BLOCK_TAGS = frozenset({
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "blockquote",
    "ul", "ol", "dl", "dt", "dd", "table", "thead", "tbody", "tfoot", "figure", "figcaption",
    "form", "fieldset", "address", "details", "summary", "hr", "body", "html",
})
_VOID_TAGS = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "area", "base", "col",
                        "embed", "source", "track", "param"})


class _ReadableText(HTMLParser):
    """Collects an HTML page's visible text: headings as Markdown, paragraphs apart, lists and
    table rows on their own lines. Only text is read; no URL is ever followed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._cell_in_row = 0
        self._trailing_newlines = 0

    def _emit(self, text: str) -> None:
        self._out.append(text)
        stripped = text.rstrip("\n")
        self._trailing_newlines = (len(text) - len(stripped)) + (self._trailing_newlines if not stripped else 0)

    def _break(self, marker: str) -> None:
        # Breaks merge rather than add up: </li><li> is one line break, </p><p> one blank line.
        missing = len(marker) - self._trailing_newlines
        if missing > 0 and self._out:
            self._emit("\n" * missing)

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._break("\n\n")
            self._emit("#" * int(tag[1]) + " ")
        elif tag == "li":
            self._break("\n")
            self._emit("- ")
        elif tag == "tr":
            self._break("\n")
            self._cell_in_row = 0
        elif tag in ("td", "th"):
            if self._cell_in_row:
                self._emit(" | ")
            self._cell_in_row += 1
        elif tag == "br":
            self._break("\n")
        elif tag == "pre":
            self._break("\n\n")
            self._pre_depth += 1
        elif tag in _BLOCK_TAGS:
            self._break("\n\n")

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth or tag in _VOID_TAGS:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self._break("\n\n")
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6") or tag in _BLOCK_TAGS:
            self._break("\n\n")
        elif tag in ("li", "tr"):
            self._break("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth or not data:
            return
        if self._pre_depth:
            self._emit(data.replace("\r\n", "\n"))
        else:
            text = re.sub(r"\s+", " ", data)
            if not self._out or self._out[-1][-1:].isspace():
                text = text.lstrip(" ")  # no indent from the source's line breaks
            if text:
                self._emit(text)

    def text(self) -> str:
        joined = "".join(self._out).replace("\xa0", " ")
        text = "\n".join(line.rstrip() for line in joined.split("\n"))
        # A heading marker left alone (an empty <h2>) is noise.
        text = re.sub(r"(?m)^#{1,6} *$", "", text)
        text = re.sub(r"\n{3,}", "\n\n", text)
        return text.strip()


def html_to_text(html: str) -> str:
    """Readable text of an HTML page (scripts and styles dropped, structure kept as Markdown)."""
    parser = _ReadableText()
    parser.feed(html)
    parser.close()
    return parser.text()
