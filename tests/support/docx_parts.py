"""Word documents written part by part into a zip, for tests that need WordprocessingML that
pandoc doesn't produce (text boxes, merged cells, headers, Strict OOXML, broken elements)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional, Sequence

TRANSITIONAL = {
    "w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
    "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "rel_base": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
}
STRICT = {
    "w": "http://purl.oclc.org/ooxml/wordprocessingml/main",
    "r": "http://purl.oclc.org/ooxml/officeDocument/relationships",
    "rel_base": "http://purl.oclc.org/ooxml/officeDocument/relationships",
}
MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
WPS = "http://schemas.microsoft.com/office/word/2010/wordprocessingShape"
VML = "urn:schemas-microsoft-com:vml"
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"


def p(text: str, style: Optional[str] = None) -> str:
    ppr = f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else ""
    return f"<w:p>{ppr}<w:r><w:t xml:space=\"preserve\">{text}</w:t></w:r></w:p>"


def _root(tag: str, ns: dict[str, str], body: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            f'<w:{tag} xmlns:w="{ns["w"]}" xmlns:r="{ns["r"]}" xmlns:mc="{MC}" xmlns:wps="{WPS}" '
            f'xmlns:v="{VML}">{body}</w:{tag}>')


def write_docx(path: Path, body: str, *, strict: bool = False, footnotes: Sequence[tuple[int, str]] = (),
               endnotes: Sequence[tuple[int, str]] = (), headers: Sequence[str] = (),
               footers: Sequence[str] = (), styles: Optional[str] = None,
               compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A minimal but valid .docx; ``body`` is the XML inside <w:body>. Notes are (id, body
    XML); headers/footers are body XML, one part each."""
    ns = STRICT if strict else TRANSITIONAL
    parts: dict[str, str] = {}
    rels: list[tuple[str, str]] = []  # (type, target)
    if footnotes:
        # Word's separator "notes" come first; they are page furniture, not notes.
        separator = '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
        parts["word/footnotes.xml"] = _root("footnotes", ns, separator + "".join(
            f'<w:footnote w:id="{i}">{xml}</w:footnote>' for i, xml in footnotes))
        rels.append(("footnotes", "footnotes.xml"))
    if endnotes:
        parts["word/endnotes.xml"] = _root("endnotes", ns, "".join(
            f'<w:endnote w:id="{i}">{xml}</w:endnote>' for i, xml in endnotes))
        rels.append(("endnotes", "endnotes.xml"))
    for number, xml in enumerate(headers, start=1):
        parts[f"word/header{number}.xml"] = _root("hdr", ns, xml)
        rels.append(("header", f"header{number}.xml"))
    for number, xml in enumerate(footers, start=1):
        parts[f"word/footer{number}.xml"] = _root("ftr", ns, xml)
        rels.append(("footer", f"footer{number}.xml"))
    if styles is not None:
        parts["word/styles.xml"] = _root("styles", ns, styles)
        rels.append(("styles", "styles.xml"))
    parts["word/document.xml"] = _root("document", ns, f"<w:body>{body}</w:body>")
    parts["word/_rels/document.xml.rels"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PACKAGE_RELS}">'
        + "".join(f'<Relationship Id="rId{i}" Type="{ns["rel_base"]}/{kind}" Target="{target}"/>'
                  for i, (kind, target) in enumerate(rels, start=1))
        + "</Relationships>")
    parts["_rels/.rels"] = (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PACKAGE_RELS}">'
        f'<Relationship Id="rId1" Type="{ns["rel_base"]}/officeDocument" Target="word/document.xml"/>'
        "</Relationships>")
    parts["[Content_Types].xml"] = (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        "</Types>")
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name in ("[Content_Types].xml", "_rels/.rels", "word/document.xml", "word/_rels/document.xml.rels"):
            archive.writestr(name, parts.pop(name))
        for name, xml in parts.items():
            archive.writestr(name, xml)
    return path
