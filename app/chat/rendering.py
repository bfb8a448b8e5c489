"""Markdown for untrusted model output: rendered safely, styled like a chat app.

Model output is untrusted text. Rendering it must never fetch anything: no remote images, no local
files (``![x](file:///...)`` would otherwise read the disk), no style sheets, no HTML (raw HTML
is shown as text). Images become plain links the user can choose to open; links open in the
browser only when clicked, and only for http(s) and mailto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFont,
    QFontDatabase,
    QFontMetricsF,
    QImage,
    QPalette,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextDocument,
    QTextFormat,
    QTextFrame,
    QTextFrameFormat,
    QTextLength,
    QTextTable,
    QTextTableCellFormat,
    QTextTableFormat,
)
from PySide6.QtWidgets import QFrame, QSizePolicy, QTextBrowser, QWidget

from app.chat import math_text
from app.chat.code_blocks import CODE_LANGUAGE_PROPERTY, CODE_TEXT_PROPERTY, CopyButtons, highlight

COPY_BUTTON_ROOM = 14
SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
MARKDOWN_FEATURES = QTextDocument.MarkdownFeature(
    QTextDocument.MarkdownFeature.MarkdownDialectGitHub.value | QTextDocument.MarkdownFeature.MarkdownNoHTML.value
)


@dataclass(frozen=True)
class RenderColors:
    text: QColor
    muted: QColor
    code_background: QColor
    code_border: QColor
    link: QColor
    math: QColor = field(default_factory=lambda: QColor(110, 60, 200))
    quote_bar: QColor = field(default_factory=lambda: QColor(0, 0, 0, 55))

    @property
    def dark(self) -> bool:
        return self.code_background.lightness() < 128

    @classmethod
    def from_palette(cls, palette: QPalette) -> "RenderColors":
        base = palette.color(QPalette.ColorRole.Base)
        text = palette.color(QPalette.ColorRole.Text)
        dark = base.lightness() < 128
        code_bg = base.lighter(135) if dark else QColor(246, 246, 248)
        if dark and base.lightness() < 20:
            code_bg = QColor(38, 38, 42)
        muted = QColor(text)
        muted.setAlphaF(0.6)
        return cls(
            text=text,
            muted=muted,
            code_background=code_bg,
            code_border=QColor(255, 255, 255, 28) if dark else QColor(0, 0, 0, 22),
            link=palette.color(QPalette.ColorRole.Link),
            math=QColor(210, 168, 255) if dark else QColor(110, 60, 200),
            quote_bar=QColor(255, 255, 255, 80) if dark else QColor(0, 0, 0, 70),
        )


def monospace_font(point_size: float | None = None) -> QFont:
    font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if point_size:
        font.setPointSizeF(point_size)
    return font


class SafeDocument(QTextDocument):
    """A QTextDocument that never loads a resource: every request is refused and recorded."""

    def __init__(self, parent: Optional[Any] = None, refused: Optional[list[str]] = None) -> None:
        super().__init__(parent)
        # Shared with the view, so it survives the view swapping in a freshly rendered document.
        self.refused_resources: list[str] = refused if refused is not None else []

    def loadResource(self, type: int, name: QUrl) -> Any:  # noqa: N802, A002 (Qt API)
        self.refused_resources.append(name.toString())
        # A non-null value: Qt's fallback would otherwise read local files for relative/file URLs.
        if type == QTextDocument.ResourceType.ImageResource.value:
            placeholder = QImage(1, 1, QImage.Format.Format_ARGB32)
            placeholder.fill(Qt.GlobalColor.transparent)
            return placeholder
        return ""


def render_markdown(document: QTextDocument, markdown: str, colors: RenderColors, base_font: QFont) -> None:
    """Replace ``document``'s content with ``markdown``, made safe and styled."""
    document.setDefaultFont(base_font)
    # Math goes out of the parser's reach first: Markdown escapes and emphasis would eat it.
    protected, math_spans = math_text.protect(markdown)
    document.setMarkdown(protected, MARKDOWN_FEATURES)
    _replace_images_with_links(document, colors)
    _style_code(document, colors, base_font)
    math_text.restore(document, math_spans, _mono_for(base_font), colors.math)
    _style_tables(document, colors)
    _style_quotes(document, colors)
    _style_links(document, colors)


def _mono_for(base_font: QFont) -> QFont:
    return monospace_font(max(base_font.pointSizeF() - 1, 9) if base_font.pointSizeF() > 0 else None)


# Marks the one-cell tables that draw block quotes (so table styling leaves them alone).
QUOTE_PROPERTY = QTextFormat.Property.UserProperty.value + 31
QUOTE_BAR_WIDTH = 3


def _style_tables(document: QTextDocument, colors: RenderColors) -> None:
    """Hairline borders and roomy cells instead of Qt's heavy default grid."""
    for frame in document.rootFrame().childFrames():
        if not isinstance(frame, QTextTable) or frame.format().hasProperty(QUOTE_PROPERTY):
            continue
        fmt = frame.format()
        fmt.setBorder(1)
        fmt.setBorderBrush(colors.code_border)
        fmt.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
        fmt.setBorderCollapse(True)
        fmt.setCellSpacing(0)
        fmt.setCellPadding(6)
        fmt.setTopMargin(6)
        fmt.setBottomMargin(6)
        fmt.setHeaderRowCount(1)
        frame.setFormat(fmt)
        for column in range(frame.columns()):
            cell = frame.cellAt(0, column)
            cell_format = cell.format()
            cell_format.setBackground(colors.code_background)
            cell.setFormat(cell_format)
        _align_header(frame)


def _align_header(table: QTextTable) -> None:
    """Qt's Markdown import aligns body cells as the delimiter row says (``:-:``, ``--:``)
    but leaves header cells left-aligned: give each header cell its column's alignment."""
    if table.rows() < 2:
        return
    for column in range(table.columns()):
        alignment = table.cellAt(1, column).firstCursorPosition().blockFormat().alignment()
        header = table.cellAt(0, column)
        cursor = header.firstCursorPosition()
        cursor.setPosition(header.lastCursorPosition().position(), QTextCursor.MoveMode.KeepAnchor)
        fmt = QTextBlockFormat()
        fmt.setAlignment(alignment)
        cursor.mergeBlockFormat(fmt)


def _quote_level(block) -> int:
    return block.blockFormat().intProperty(QTextFormat.Property.BlockQuoteLevel)


def _style_quotes(document: QTextDocument, colors: RenderColors) -> None:
    """Block quotes get a bar down their left side. Qt only indents them, so each run of quoted
    paragraphs moves into a one-cell table whose cell draws just its left border."""
    runs: list[tuple[int, int]] = []
    block = document.begin()
    root = document.rootFrame()
    while block.isValid():
        if _quote_level(block) > 0 and _frame_of(document, block) == root:
            start, last = block.position(), block
            following = block.next()
            while following.isValid() and _quote_level(following) > 0 and _frame_of(document, following) == root:
                last, following = following, following.next()
            runs.append((start, last.position() + last.length() - 1))
            block = following
        else:
            block = block.next()
    table_format = QTextTableFormat()
    table_format.setProperty(QUOTE_PROPERTY, True)
    table_format.setBorder(0)
    table_format.setBorderCollapse(True)
    table_format.setCellSpacing(0)
    table_format.setCellPadding(0)
    table_format.setTopMargin(4)
    table_format.setBottomMargin(4)
    table_format.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
    cell_format = QTextTableCellFormat()
    cell_format.setLeftBorder(QUOTE_BAR_WIDTH)
    cell_format.setLeftBorderBrush(colors.quote_bar)
    cell_format.setLeftBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
    for side in ("Top", "Right", "Bottom"):
        getattr(cell_format, f"set{side}Border")(0)
        getattr(cell_format, f"set{side}BorderStyle")(QTextFrameFormat.BorderStyle.BorderStyle_None)
    cell_format.setLeftPadding(12)
    cell_format.setTopPadding(2)
    cell_format.setBottomPadding(2)
    quoted = QTextCharFormat()
    quoted.setForeground(colors.muted)
    cursor = QTextCursor(document)
    for start, end in reversed(runs):  # from the end: earlier positions stay valid
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        cursor.mergeCharFormat(quoted)
        levels = []
        block = document.findBlock(start)
        while block.isValid() and block.position() <= end:
            levels.append(_quote_level(block))
            block = block.next()
        content = cursor.selection()
        cursor.removeSelectedText()
        table = cursor.insertTable(1, 1, table_format)
        cell = table.cellAt(0, 0)
        cell.setFormat(cell_format)
        inside = cell.firstCursorPosition()
        inside.insertFragment(content)
        # The bar replaces Qt's 40-pixel quote indent; nested quotes keep a smaller step.
        block = table.cellAt(0, 0).firstCursorPosition().block()
        for level in levels:
            if not block.isValid():
                break
            fmt = block.blockFormat()
            fmt.setLeftMargin(16 * (level - 1))
            QTextCursor(block).setBlockFormat(fmt)
            block = block.next()


def _fragments(document: QTextDocument):
    block = document.begin()
    while block.isValid():
        iterator = block.begin()
        while not iterator.atEnd():
            fragment = iterator.fragment()
            if fragment.isValid():
                yield block, fragment
            iterator += 1
        block = block.next()


def _replace_images_with_links(document: QTextDocument, colors: RenderColors) -> None:
    images = [
        (fragment.position(), fragment.length(), fragment.charFormat().toImageFormat())
        for _, fragment in _fragments(document)
        if fragment.charFormat().isImageFormat()
    ]
    cursor = QTextCursor(document)
    for position, length, image in reversed(images):  # from the end: positions stay valid
        url = image.name()
        alt = image.stringProperty(QTextFormat.Property.ImageAltText) or "image"
        link = QTextCharFormat()
        link.setAnchor(True)
        link.setAnchorHref(url)
        link.setForeground(colors.link)
        link.setToolTip(f"Image not loaded: {url}")
        cursor.setPosition(position)
        cursor.setPosition(position + length, QTextCursor.MoveMode.KeepAnchor)
        cursor.insertText(f"[image: {alt}]", link)


def _is_code_block(block) -> bool:
    fmt = block.blockFormat()
    return fmt.hasProperty(QTextFormat.Property.BlockCodeFence) or fmt.nonBreakableLines()


def _style_code(document: QTextDocument, colors: RenderColors, base_font: QFont) -> None:
    mono = monospace_font(max(base_font.pointSizeF() - 1, 9) if base_font.pointSizeF() > 0 else None)
    # Inline code: a subtle background behind fixed-pitch runs outside code blocks.
    inline = []
    for block, fragment in _fragments(document):
        if not _is_code_block(block) and fragment.charFormat().fontFixedPitch():
            inline.append((fragment.position(), fragment.length()))
    cursor = QTextCursor(document)
    for position, length in inline:
        cursor.setPosition(position)
        cursor.setPosition(position + length, QTextCursor.MoveMode.KeepAnchor)
        fmt = QTextCharFormat()
        fmt.setBackground(colors.code_background)
        fmt.setFont(mono, QTextCharFormat.FontPropertiesInheritanceBehavior.FontPropertiesSpecifiedOnly)
        cursor.mergeCharFormat(fmt)

    # Code blocks: each run of consecutive code lines moves into one padded, tinted frame.
    runs: list[tuple[int, int]] = []
    block = document.begin()
    while block.isValid():
        if _is_code_block(block) and block.document().rootFrame() == _frame_of(document, block):
            start = block.position()
            last = block
            following = block.next()
            while following.isValid() and _is_code_block(following):
                last, following = following, following.next()
            runs.append((start, last.position() + last.length() - 1))
            block = following
        else:
            block = block.next()
    frame_format = QTextFrameFormat()
    frame_format.setBackground(colors.code_background)
    frame_format.setBorder(1)
    frame_format.setBorderBrush(colors.code_border)
    frame_format.setBorderStyle(QTextFrameFormat.BorderStyle.BorderStyle_Solid)
    frame_format.setPadding(10)
    frame_format.setTopMargin(6)
    frame_format.setBottomMargin(6)
    frame_format.setWidth(QTextLength(QTextLength.Type.PercentageLength, 100))
    code_chars = QTextCharFormat()
    code_chars.setFont(mono, QTextCharFormat.FontPropertiesInheritanceBehavior.FontPropertiesSpecifiedOnly)
    code_chars.setBackground(Qt.GlobalColor.transparent)
    # Long lines wrap (the view has no horizontal scrolling), continuing under a hanging
    # indent so a wrapped line still reads as one line of code.
    hanging = QFontMetricsF(mono).horizontalAdvance("    ")
    tight = QTextBlockFormat()
    tight.setTopMargin(0)
    tight.setBottomMargin(0)
    tight.setNonBreakableLines(False)
    tight.setLeftMargin(hanging)
    tight.setTextIndent(-hanging)
    # The first line sits lower, under the Copy button (code_blocks.CopyButtons) in the corner.
    first_line = QTextBlockFormat()
    first_line.setTopMargin(COPY_BUTTON_ROOM)
    frames = []
    for start, end in reversed(runs):
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        code = cursor.selectedText().replace("\u2029", "\n")
        language = document.findBlock(start).blockFormat().stringProperty(QTextFormat.Property.BlockCodeLanguage)
        cursor.mergeCharFormat(code_chars)
        cursor.mergeBlockFormat(tight)
        highlight(document, start, code, language, colors.dark)
        QTextCursor(document.findBlock(start)).mergeBlockFormat(first_line)
        cursor.setPosition(start)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        this_frame = QTextFrameFormat(frame_format)
        this_frame.setProperty(CODE_TEXT_PROPERTY, code)
        this_frame.setProperty(CODE_LANGUAGE_PROPERTY, language)
        frames.append(cursor.insertFrame(this_frame))
    for frame in frames:
        _hide_empty_neighbours(document, frame)


def _hide_empty_neighbours(document: QTextDocument, frame: QTextFrame) -> None:
    """insertFrame leaves an empty paragraph on each side of the frame: a blank line's worth
    of space around every code block. They stay in the document, out of the layout."""
    for position in (frame.firstPosition() - 1, frame.lastPosition() + 1):
        block = document.findBlock(position)
        if block.isValid() and not block.text() and _frame_of(document, block) != frame:
            block.setVisible(False)
            document.markContentsDirty(block.position(), block.length())


def _frame_of(document: QTextDocument, block) -> Any:
    cursor = QTextCursor(block)
    return cursor.currentFrame()


def _style_links(document: QTextDocument, colors: RenderColors) -> None:
    links = [
        (fragment.position(), fragment.length())
        for _, fragment in _fragments(document)
        if fragment.charFormat().isAnchor()
    ]
    cursor = QTextCursor(document)
    fmt = QTextCharFormat()
    fmt.setForeground(colors.link)
    for position, length in links:
        cursor.setPosition(position)
        cursor.setPosition(position + length, QTextCursor.MoveMode.KeepAnchor)
        cursor.mergeCharFormat(fmt)


def is_safe_link(url: QUrl) -> bool:
    return url.scheme().lower() in SAFE_LINK_SCHEMES and url.isValid()


class SafeTextView(QTextBrowser):
    """A read-only text view for untrusted text that sizes itself to its content.

    Links are never followed inside the view; a click on an http(s)/mailto link opens the
    system browser (through ``open_url``, replaceable in tests), anything else is ignored.
    """

    linkOpened = Signal(QUrl)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.copy_buttons = CopyButtons(self.viewport())
        font = self.font()
        if font.pointSizeF() > 0:
            font.setPointSizeF(round(font.pointSizeF() * 1.12, 1))  # reading size, a notch above UI text
            self.setFont(font)
        self.refused_resources: list[str] = []
        self._install(SafeDocument(self, self.refused_resources))
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.setReadOnly(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
            | Qt.TextInteractionFlag.LinksAccessibleByMouse
        )
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QTextBrowser { background: transparent; }")
        self.open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl
        self.anchorClicked.connect(self._on_anchor_clicked)

    def _install(self, document: SafeDocument) -> None:
        # The replaced document is deleted by Qt: it is a child of this view.
        document.setDocumentMargin(0)
        self.setDocument(document)
        document.setTextWidth(self.viewport().width())
        document.documentLayout().documentSizeChanged.connect(self._fit_height)

    def loadResource(self, type: int, name: QUrl) -> Any:  # noqa: N802, A002 (Qt API)
        return self.document().loadResource(type, name)

    def set_markdown(self, markdown: str, colors: RenderColors) -> None:
        # Rendered and sanitised in a document no view has laid out yet: the image a model
        # names is gone before any layout could ask for it.
        document = SafeDocument(self, self.refused_resources)
        render_markdown(document, markdown, colors, self.font())
        self._install(document)
        self._fit_height()

    def set_plain(self, text: str) -> None:
        self.document().setDefaultFont(self.font())
        self.setPlainText(text)
        self._fit_height()

    def _on_anchor_clicked(self, url: QUrl) -> None:
        if is_safe_link(url):
            self.open_url(url)
            self.linkOpened.emit(url)

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self.document().setTextWidth(self.viewport().width())
        self._fit_height()

    def _fit_height(self, *_: Any) -> None:
        margins = self.contentsMargins()  # frame, stylesheet border and padding, top and bottom
        height = int(self.document().size().height() + 0.999) + margins.top() + margins.bottom()
        if height != self.height():
            self.setFixedHeight(max(height, 1))
        self.copy_buttons.update(self.document())
