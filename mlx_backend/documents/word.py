"""The text of a Word document: headings, lists and tables kept as Markdown.

Read straight from the zip with a streaming XML parser rather than python-docx: python-docx
decompresses and parses each whole part in memory (a 6.8 MB file expanding to 2 GB grew the
process past 14 GB), and it drops footnotes, endnotes, text boxes and nested tables. Here:

- the zip's declared sizes are checked first (member count, per-part and total size, ratio),
  so a zip bomb is refused before anything is decompressed;
- the parts are then fed to ``XMLPullParser`` in chunks, counting the bytes really
  decompressed (declared sizes can lie) and the element depth, and refusing any DOCTYPE
  (ElementTree never fetches external entities; refusing DOCTYPE also rules out entity bombs);
- the body is handled one top-level block (paragraph, table, content control) at a time and
  then cleared, so memory follows the largest block, not the document;
- one block or table cell that can't be read is skipped with a note, not the whole file;
- Strict OOXML (purl.oclc.org namespaces) is mapped onto the transitional names.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from mlx_backend.errors import DocumentError

# Limits on the XML parts that are read (images and other media are never decompressed).
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_TEXT_PARTS_BYTES = 96 * 1024 * 1024
# Declared size of all members together (media included), and how many members.
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_MEMBERS = 10_000
# Word XML deflates 5-30x; a much higher ratio on a part of any size is a bomb.
MAX_RATIO = 100
RATIO_MIN_BYTES = 1024 * 1024
# Real documents nest a few dozen levels (tables in tables, text boxes); more is an attack.
MAX_DEPTH = 256
_CHUNK = 64 * 1024

_W = "w"
# Namespace URI -> short prefix; Strict OOXML's URIs map to the same prefixes as transitional.
_NAMESPACES = {
    "http://schemas.openxmlformats.org/wordprocessingml/2006/main": "w",
    "http://purl.oclc.org/ooxml/wordprocessingml/main": "w",
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships": "r",
    "http://purl.oclc.org/ooxml/officeDocument/relationships": "r",
    "http://schemas.openxmlformats.org/package/2006/relationships": "rel",
    "http://schemas.openxmlformats.org/markup-compatibility/2006": "mc",
}
_DOCTYPE_MARKS = tuple("<!DOCTYPE".encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be"))
_HEADING_NAME = re.compile(r"heading\s*(\d)", re.IGNORECASE)
_TEXT_PART_TYPES = ("officeDocument", "styles", "numbering", "footnotes", "endnotes", "header", "footer")


class _Refused(Exception):
    """A limit was crossed while streaming; becomes a DocumentError naming the file."""


def _name(tag: str) -> str:
    """'{uri}local' -> 'w:local' for known namespaces, else the local name alone."""
    if tag[:1] != "{":
        return tag
    uri, _, local = tag[1:].partition("}")
    prefix = _NAMESPACES.get(uri)
    return f"{prefix}:{local}" if prefix else local


def _attr(element: Element, name: str) -> Optional[str]:
    """An attribute by short name ('w:val', 'r:id'), in either namespace family."""
    wanted_prefix, _, wanted_local = name.partition(":")
    for key, value in element.attrib.items():
        if key[:1] == "{":
            uri, _, local = key[1:].partition("}")
            if local == wanted_local and _NAMESPACES.get(uri) == wanted_prefix:
                return value
        elif key == name:
            return value
    return None


def _child(element: Element, name: str) -> Optional[Element]:
    for child in element:
        if _name(child.tag) == name:
            return child
    return None


@dataclass
class _Budget:
    """Bytes really decompressed so far, over all parts."""

    used: int = 0


def _stream(archive: zipfile.ZipFile, member: str, budget: _Budget, *,
            block_depth: Optional[int] = None) -> Iterator[Element]:
    """Parse one part incrementally. With ``block_depth``, yield each element ending at that
    depth (root = 1) and clear it afterwards; without, yield only the finished root."""
    parser = XMLPullParser(events=("start", "end"))
    depth = 0
    part_bytes = 0
    tail = b""
    stack: list[Element] = []
    with archive.open(member) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            part_bytes += len(chunk)
            budget.used += len(chunk)
            if part_bytes > MAX_PART_BYTES or budget.used > MAX_TEXT_PARTS_BYTES:
                raise _Refused(f"expands to more than {_mb(min(MAX_PART_BYTES, MAX_TEXT_PARTS_BYTES))} of text")
            window = tail + chunk
            if any(mark in window for mark in _DOCTYPE_MARKS):
                raise _Refused("contains a DOCTYPE declaration, which Word documents never have")
            tail = window[-20:]
            parser.feed(chunk)
            for event, element in parser.read_events():
                if event == "start":
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise _Refused(f"is nested more than {MAX_DEPTH} levels deep")
                    stack.append(element)
                    continue
                depth -= 1
                stack.pop()
                if block_depth is not None and depth + 1 == block_depth:
                    yield element
                    element.clear()
                    if stack:  # drop the cleared block from its parent as well
                        stack[-1].remove(element)
                elif depth == 0 and block_depth is None:
                    yield element
    parser.close()


# --- package structure ------------------------------------------------------------------------


def _relationships(archive: zipfile.ZipFile, part: str, budget: _Budget) -> list[tuple[str, str, str]]:
    """(id, type's last segment, target part) for ``part``'s relationships."""
    folder, base = posixpath.split(part)
    rels = posixpath.join(folder, "_rels", base + ".rels")
    if rels not in archive.NameToInfo:
        return []
    found = []
    for root in _stream(archive, rels, budget):
        for rel in root:
            if rel.get("TargetMode") == "External":
                continue
            target = rel.get("Target") or ""
            target = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join(folder, target))
            found.append((rel.get("Id") or "", (rel.get("Type") or "").rsplit("/", 1)[-1], target))
    return found


@dataclass
class _Styles:
    names: dict[str, str] = field(default_factory=dict)  # styleId -> name
    outline: dict[str, int] = field(default_factory=dict)  # styleId -> outline level (0 = Heading 1)
    numbered: dict[tuple[str, str], bool] = field(default_factory=dict)  # (numId, ilvl) -> decimal?


def _read_styles(archive: zipfile.ZipFile, target: Optional[str], budget: _Budget, styles: _Styles) -> None:
    if not target or target not in archive.NameToInfo:
        return
    for root in _stream(archive, target, budget):
        for style in root:
            if _name(style.tag) != "w:style":
                continue
            style_id = _attr(style, "w:styleId") or ""
            name = _child(style, "w:name")
            styles.names[style_id] = (_attr(name, "w:val") if name is not None else None) or style_id
            ppr = _child(style, "w:pPr")
            level = _child(ppr, "w:outlineLvl") if ppr is not None else None
            if level is not None and (_attr(level, "w:val") or "").isdigit():
                styles.outline[style_id] = int(_attr(level, "w:val") or 0)


def _read_numbering(archive: zipfile.ZipFile, target: Optional[str], budget: _Budget, styles: _Styles) -> None:
    if not target or target not in archive.NameToInfo:
        return
    formats: dict[str, dict[str, str]] = {}
    links: dict[str, str] = {}
    for root in _stream(archive, target, budget):
        for item in root:
            kind = _name(item.tag)
            if kind == "w:abstractNum":
                levels = formats.setdefault(_attr(item, "w:abstractNumId") or "", {})
                for level in item:
                    fmt = _child(level, "w:numFmt")
                    if _name(level.tag) == "w:lvl" and fmt is not None:
                        levels[_attr(level, "w:ilvl") or "0"] = _attr(fmt, "w:val") or ""
            elif kind == "w:num":
                abstract = _child(item, "w:abstractNumId")
                if abstract is not None:
                    links[_attr(item, "w:numId") or ""] = _attr(abstract, "w:val") or ""
    for num_id, abstract_id in links.items():
        for level, fmt in formats.get(abstract_id, {}).items():
            styles.numbered[(num_id, level)] = fmt not in ("bullet", "none", "")


# --- text -------------------------------------------------------------------------------------


_SKIPPED = frozenset({"w:del", "w:moveFrom", "w:instrText", "w:delText", "w:rPr", "w:pPr", "w:sectPr",
                      "w:footnoteRef", "w:endnoteRef", "w:commentReference", "w:tblPr", "w:trPr", "w:tcPr"})


class _Reader:
    """Turns WordprocessingML blocks into Markdown-like text blocks."""

    def __init__(self, styles: _Styles) -> None:
        self.styles = styles
        self.skipped: list[str] = []
        self.note_refs: list[tuple[str, str]] = []  # ("footnote"/"endnote", id) in reading order

    # Blocks: paragraphs, tables, content controls; text boxes come out after their paragraph.
    def blocks(self, element: Element) -> list[str]:
        kind = _name(element.tag)
        if kind == "w:p":
            return self.paragraph(element)
        if kind == "w:tbl":
            return [self.table(element)]
        if kind in ("w:sdt", "w:sdtContent", "w:customXml", "w:ins", "w:moveTo", "w:smartTag",
                    "w:txbxContent", "w:body", "w:hdr", "w:ftr", "w:footnote", "w:endnote"):
            out: list[str] = []
            for child in element:
                out += self.guarded(child)
            return out
        if kind == "mc:AlternateContent":
            return self.alternate(element, self.blocks)
        return []

    def guarded(self, element: Element) -> list[str]:
        """``blocks``, but a block that can't be read is skipped and counted."""
        try:
            return self.blocks(element)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
            kind = {"w:tbl": "table", "w:p": "paragraph"}.get(_name(element.tag), "part")
            self.skipped.append(kind)
            return []

    def alternate(self, element: Element, read: Callable[[Element], list[str]]) -> list[str]:
        """mc:AlternateContent: the first Choice, or the Fallback if the Choice gave nothing
        (the same text box is usually in both: reading both would say everything twice)."""
        for branch in element:
            if _name(branch.tag) in ("mc:Choice", "mc:Fallback"):
                got: list[str] = []
                for child in branch:
                    got += read(child)
                if any(part.strip() for part in got):
                    return got
        return []

    def inline(self, element: Element, boxes: list[str]) -> list[str]:
        """The run text under ``element``; text boxes met on the way go into ``boxes``."""
        out: list[str] = []
        for child in element:
            kind = _name(child.tag)
            if kind in _SKIPPED:
                continue
            if kind == "w:t":
                out.append(child.text or "")
            elif kind in ("w:tab", "w:ptab"):
                out.append("\t")
            elif kind in ("w:br", "w:cr"):
                out.append("\n" if _attr(child, "w:type") in (None, "textWrapping") else " ")
            elif kind == "w:noBreakHyphen":
                out.append("-")
            elif kind in ("w:footnoteReference", "w:endnoteReference"):
                note = "footnote" if kind == "w:footnoteReference" else "endnote"
                self.note_refs.append((note, _attr(child, "w:id") or ""))
                out.append(f"[^{_note_label(note, self.count_refs(note))}]")
            elif kind == "w:txbxContent":
                for block in child:
                    boxes += self.guarded(block)
            elif kind == "mc:AlternateContent":
                # The first branch with any text: a text box is usually in both Choice and
                # Fallback, and reading both would say everything twice.
                for branch in child:
                    if _name(branch.tag) not in ("mc:Choice", "mc:Fallback"):
                        continue
                    branch_boxes: list[str] = []
                    text = self.inline(branch, branch_boxes)
                    if "".join(text).strip() or any(box.strip() for box in branch_boxes):
                        out += text
                        boxes += branch_boxes
                        break
            else:
                out += self.inline(child, boxes)
        return out

    def count_refs(self, note: str) -> int:
        return sum(1 for kind, _ in self.note_refs if kind == note)

    def paragraph_text(self, paragraph: Element, boxes: list[str]) -> str:
        text = "".join(self.inline(paragraph, boxes))
        return "\n".join(" ".join(line.split()) for line in text.split("\n")).strip()

    def paragraph(self, paragraph: Element) -> list[str]:
        boxes: list[str] = []
        text = self.paragraph_text(paragraph, boxes)
        blocks = [self.styled(paragraph, text)] if text else []
        return blocks + boxes

    def styled(self, paragraph: Element, text: str) -> str:
        ppr = _child(paragraph, "w:pPr")
        style_id = ""
        level: Optional[int] = None
        numbering = None
        if ppr is not None:
            pstyle = _child(ppr, "w:pStyle")
            style_id = (_attr(pstyle, "w:val") if pstyle is not None else None) or ""
            outline = _child(ppr, "w:outlineLvl")
            if outline is not None and (_attr(outline, "w:val") or "").isdigit():
                level = int(_attr(outline, "w:val") or 0)
            numbering = _child(ppr, "w:numPr")
        name = self.styles.names.get(style_id, style_id)
        if name == "Title":
            return f"# {text}"
        heading = _HEADING_NAME.fullmatch(name.strip())
        if heading:
            level = int(heading.group(1)) - 1
        elif level is None:
            level = self.styles.outline.get(style_id)
        if level is not None and level < 9:
            # Title takes "#", so Heading 1 is "##": the document's outline keeps its shape.
            return "#" * min(level + 2, 6) + " " + text
        if numbering is not None:
            num_id = _child(numbering, "w:numId")
            ilvl = _child(numbering, "w:ilvl")
            key = ((_attr(num_id, "w:val") if num_id is not None else None) or "",
                   (_attr(ilvl, "w:val") if ilvl is not None else None) or "0")
            if key[0] != "0":  # numId 0 switches numbering off
                return ("1. " if self.styles.numbered.get(key) else "- ") + text
        if name.startswith("List Number"):
            return f"1. {text}"
        if name.startswith("List"):
            return f"- {text}"
        return text

    def table(self, table: Element) -> str:
        rows = self.table_rows(table)
        rows = [row for row in rows if any(row)]
        if not rows:
            return ""
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        cells = [[cell.replace("|", "\\|") for cell in row] for row in rows]
        lines = ["| " + " | ".join(cells[0]) + " |", "| " + " | ".join("---" for _ in cells[0]) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
        return "\n".join(lines)

    def table_rows(self, table: Element) -> list[list[str]]:
        rows: list[list[str]] = []
        for row in _elements(table, "w:tr"):
            cells: list[str] = []
            for cell in _elements(row, "w:tc"):
                try:
                    text, span = self.cell(cell)
                except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError):
                    self.skipped.append("table cell")
                    text, span = "", 1
                # A merged cell's text once; the columns it covers stay empty so columns line up.
                cells += [text] + [""] * (span - 1)
            rows.append(cells)
        return rows

    def cell(self, cell: Element) -> tuple[str, int]:
        span = 1
        tcpr = _child(cell, "w:tcPr")
        if tcpr is not None:
            grid = _child(tcpr, "w:gridSpan")
            if grid is not None:
                span = max(1, min(int(_attr(grid, "w:val") or "1"), 64))
            merge = _child(tcpr, "w:vMerge")
            if merge is not None and _attr(merge, "w:val") in (None, "continue"):
                return "", span  # continues the cell above, whose text is already there
        pieces: list[str] = []
        for child in cell:
            if _name(child.tag) == "w:tbl":
                # A table inside a cell: its rows flattened into the cell ("a / b; c / d").
                nested = ["; ".join(" / ".join(c for c in row if c) for row in self.table_rows(child) if any(row))]
                pieces += nested
            else:
                pieces += self.guarded(child)
        text = " ".join(" ".join(piece.split()) for piece in pieces if piece.strip())
        return text, span


def _elements(parent: Element, name: str) -> Iterator[Element]:
    """Direct children named ``name``, also inside content controls and revisions."""
    for child in parent:
        kind = _name(child.tag)
        if kind == name:
            yield child
        elif kind in ("w:sdt", "w:sdtContent", "w:customXml", "w:ins", "w:moveTo"):
            yield from _elements(child, name)


def _note_label(note: str, number: int) -> str:
    return str(number) if note == "footnote" else f"e{number}"


def _join(blocks: list[str]) -> str:
    """Blocks apart by a blank line; consecutive list items stay one list."""
    joined: list[str] = []
    for block in blocks:
        if not block:
            continue
        if joined and _is_list_item(block) and _list_marker(block) == _list_marker(joined[-1].rsplit("\n", 1)[-1]):
            joined[-1] += "\n" + block
        else:
            joined.append(block)
    return "\n\n".join(joined)


def _is_list_item(block: str) -> bool:
    return block.startswith(("- ", "1. "))


def _list_marker(line: str) -> str:
    return line[:2] if _is_list_item(line) else ""


# --- the document -----------------------------------------------------------------------------


def _check_declared(archive: zipfile.ZipFile, name: str) -> None:
    """Refuse a zip bomb from its directory alone, before decompressing anything. Only the XML
    parts are ever decompressed, so they carry the size and ratio limits; all members together
    carry a (larger) total."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DocumentError(f"{name} holds {len(infos):,} files inside; a Word document has far fewer "
                            "(the file may be damaged or built to crash readers).")
    text_total = 0
    for info in infos:
        if not info.filename.endswith((".xml", ".rels")):
            continue
        text_total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MAX_PART_BYTES:
            raise DocumentError(_bomb_message(name, info.file_size))
        if info.file_size > RATIO_MIN_BYTES and ratio > MAX_RATIO:
            raise DocumentError(
                f"{name} is compressed {ratio:,.0f} to 1 ({_mb(info.file_size)} packed into "
                f"{info.compress_size / 1024:,.0f} KB), far more than a real Word document; it looks "
                "built to crash readers and was not opened.")
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES or text_total > MAX_TEXT_PARTS_BYTES:
        raise DocumentError(_bomb_message(name, max(total, text_total)))


def _bomb_message(name: str, size: int) -> str:
    return (f"{name} would expand to {_mb(size)} when opened; Qwen Desk reads Word documents up to "
            f"{_mb(MAX_PART_BYTES)} of text (the file may be damaged or built to crash readers).")


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):,.0f} MB"


def read_docx(path: Path) -> tuple[str, tuple[str, ...]]:
    """The document as Markdown-like text in reading order, and notes on what was skipped."""
    name = path.name
    try:
        with zipfile.ZipFile(path) as archive:
            return _read(archive, name)
    except DocumentError:
        raise
    except _Refused as error:
        raise DocumentError(f"{name} can't be read safely: it {error}.") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ParseError, UnicodeDecodeError) as error:
        detail = "it is damaged or incomplete" if not isinstance(error, ParseError) else "its text is damaged"
        raise DocumentError(f"{name} isn't a readable Word document ({detail}).") from None
    except NotImplementedError:
        raise DocumentError(f"{name} uses a compression method Qwen Desk can't read.") from None
    except RuntimeError as error:  # zipfile: encrypted members
        raise DocumentError(f"{name} is password-protected or encrypted ({error}).") from None
    except OSError as error:
        raise DocumentError(f"{name}: the file can't be read ({error.strerror or error}).") from None


def _read(archive: zipfile.ZipFile, name: str) -> tuple[str, tuple[str, ...]]:
    _check_declared(archive, name)
    budget = _Budget()
    names = archive.NameToInfo
    if "_rels/.rels" not in names:
        if "word/document.xml" not in names:
            raise DocumentError(f"{name} isn't a Word document (it is a zip archive without a document inside).")
        main = "word/document.xml"
    else:
        mains = [target for _, kind, target in _relationships(archive, "", budget) if kind == "officeDocument"]
        main = mains[0] if mains else "word/document.xml"
    if main not in names:
        raise DocumentError(f"{name} isn't a Word document (it has no document part; is it another Office file?).")
    related = [(kind, target) for _, kind, target in _relationships(archive, main, budget)
               if kind in _TEXT_PART_TYPES and target in names]

    styles = _Styles()
    by_kind: dict[str, list[str]] = {}
    for kind, target in related:
        by_kind.setdefault(kind, []).append(target)
    _read_styles(archive, (by_kind.get("styles") or [None])[0], budget, styles)
    _read_numbering(archive, (by_kind.get("numbering") or [None])[0], budget, styles)
    reader = _Reader(styles)

    notes_text: dict[tuple[str, str], str] = {}
    for note in ("footnote", "endnote"):
        for target in by_kind.get(note + "s", []):
            for item in _stream(archive, target, budget, block_depth=2):
                if _name(item.tag) != f"w:{note}" or _attr(item, "w:type") not in (None, "normal"):
                    continue
                notes_text[(note, _attr(item, "w:id") or "")] = _join(reader.guarded(item))

    def furniture(kind: str, label: str) -> list[str]:
        seen: list[str] = []
        for target in sorted(by_kind.get(kind, []), key=_natural):
            for root in _stream(archive, target, budget):
                text = " ".join(_join(reader.guarded(root)).split())
                if text and text not in seen:  # the same header in every section: once
                    seen.append(text)
        return [f"{label}: {text}" for text in seen]

    headers = furniture("header", "Header")
    footers = furniture("footer", "Footer")
    body: list[str] = []
    # document (1) > body (2) > blocks (3): each block is read, then cleared.
    for block in _stream(archive, main, budget, block_depth=3):
        body += reader.guarded(block)

    endings: list[str] = []
    counters = {"footnote": 0, "endnote": 0}
    for note, note_id in reader.note_refs:
        counters[note] += 1
        text = notes_text.get((note, note_id), "")
        if text:
            endings.append(f"[^{_note_label(note, counters[note])}]: " + " ".join(text.split()))
    text = _join(headers + body + footers + endings)
    if not text.strip():
        raise DocumentError(f"{name} has no text to read.")
    return text, _skip_notes(reader.skipped)


def _natural(part: str) -> list[object]:
    return [int(piece) if piece.isdigit() else piece for piece in re.split(r"(\d+)", part)]


def _skip_notes(skipped: list[str]) -> tuple[str, ...]:
    if not skipped:
        return ()
    counts: dict[str, int] = {}
    for kind in skipped:
        counts[kind] = counts.get(kind, 0) + 1
    parts = [f"{count} {kind}{'s' if count != 1 else ''}" if count != 1 else f"one {kind}"
             for kind, count in counts.items()]
    return (f"Some of the document could not be read and was skipped: {', '.join(parts)}.",)
