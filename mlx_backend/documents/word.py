"""The text of a Word document (python-docx): headings, lists and tables kept as Markdown."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlx_backend.errors import DocumentError

if TYPE_CHECKING:
    from docx.table import Table
    from docx.text.paragraph import Paragraph

_HEADING_STYLE = re.compile(r"heading\s*(\d)", re.IGNORECASE)


def read_docx(path: Path) -> str:
    """The document's paragraphs and tables as Markdown-like text, in reading order."""
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
    return "\n\n".join(blocks)


def _is_list_item(block: str) -> bool:
    return block.startswith(("- ", "1. "))


def _docx_paragraph(paragraph: Paragraph) -> str:
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


def _docx_table(table: Table) -> str:
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
