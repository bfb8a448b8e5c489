"""Fenced code in answers: Pygments colours, and a Copy button over each block.

Highlighting applies QTextCharFormats to the code already in the document (no HTML round trip,
so nothing the model wrote is re-parsed). The colours come in a light and a dark set, picked by
the code background's lightness. The Copy buttons are small overlay widgets on the text view's
viewport, placed over each code frame's top-right corner: the document's text stays exactly the
code, so selecting and copying never picks up a button label.
"""

from __future__ import annotations

from typing import Optional

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Comment, Keyword, Name, Number, Operator, String, Token, _TokenType
from pygments.util import ClassNotFound
from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QTextCharFormat, QTextCursor, QTextDocument, QTextFormat, QTextFrame
from PySide6.QtWidgets import QToolButton, QWidget

# Frame-format properties: the block's exact code, and its fence's language.
CODE_TEXT_PROPERTY = QTextFormat.Property.UserProperty.value + 11
CODE_LANGUAGE_PROPERTY = QTextFormat.Property.UserProperty.value + 12
COPIED_FEEDBACK_MS = 1500
# Longer code is shown plain: highlighting runs on every streamed render.
MAX_HIGHLIGHT_CHARS = 60_000

# (light, dark): GitHub's palettes, readable on either code background.
_PALETTE: dict[_TokenType, tuple[str, str]] = {
    Comment: ("#6e7781", "#8b949e"),
    Keyword: ("#cf222e", "#ff7b72"),
    Keyword.Constant: ("#0550ae", "#79c0ff"),
    Name.Builtin: ("#8250df", "#d2a8ff"),
    Name.Function: ("#8250df", "#d2a8ff"),
    Name.Class: ("#953800", "#ffa657"),
    Name.Decorator: ("#953800", "#ffa657"),
    Name.Tag: ("#116329", "#7ee787"),
    Name.Attribute: ("#0550ae", "#79c0ff"),
    String: ("#0a3069", "#a5d6ff"),
    Number: ("#0550ae", "#79c0ff"),
    Operator.Word: ("#cf222e", "#ff7b72"),
}


def lexer_for(language: str) -> Optional[Lexer]:
    """The fence's language (``python``, ``js``, ``sh`` ...), or None: no guessing from content."""
    name = (language or "").strip().split()[0].lower() if (language or "").strip() else ""
    if not name:
        return None
    try:
        return get_lexer_by_name(name, stripnl=False, ensurenl=False, stripall=False)
    except ClassNotFound:
        return None


def token_color(token: _TokenType, dark: bool) -> Optional[QColor]:
    while token is not Token and token is not None:
        if token in _PALETTE:
            return QColor(_PALETTE[token][1 if dark else 0])
        token = token.parent
    return None


def highlight(document: QTextDocument, start: int, code: str, language: str, dark: bool) -> int:
    """Colour ``code`` (which sits in ``document`` from ``start``); returns the coloured runs."""
    lexer = lexer_for(language)
    if lexer is None or not code or len(code) > MAX_HIGHLIGHT_CHARS:
        return 0
    utf16 = _utf16_offsets(code)
    cursor = QTextCursor(document)
    formats: dict[tuple[_TokenType, bool], QTextCharFormat] = {}
    coloured = 0
    for index, token, value in lexer.get_tokens_unprocessed(code):
        color = token_color(token, dark)
        if color is None or not value.strip():
            continue
        key = (token, dark)
        fmt = formats.get(key)
        if fmt is None:
            fmt = QTextCharFormat()
            fmt.setForeground(color)
            if token in Comment:
                fmt.setFontItalic(True)
            formats[key] = fmt
        begin = start + (utf16[index] if utf16 else index)
        end = start + (utf16[index + len(value)] if utf16 else index + len(value))
        cursor.setPosition(begin)
        cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        cursor.mergeCharFormat(fmt)
        coloured += 1
    return coloured


def _utf16_offsets(text: str) -> Optional[list[int]]:
    """Qt counts UTF-16 units: a character outside the BMP (an emoji) takes two."""
    if all(ord(ch) <= 0xFFFF for ch in text):
        return None
    offsets = [0]
    for ch in text:
        offsets.append(offsets[-1] + (2 if ord(ch) > 0xFFFF else 1))
    return offsets


def code_frames(document: QTextDocument) -> list[QTextFrame]:
    return [f for f in document.rootFrame().childFrames() if f.frameFormat().hasProperty(CODE_TEXT_PROPERTY)]


class CopyCodeButton(QToolButton):
    """Copies one code block's exact text; says "Copied" for a moment."""

    copied = Signal(str)

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("CopyCodeButton")
        self.setText("Copy")
        self.setToolTip("Copy this code")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.setAutoRaise(True)
        self.code = ""
        self._reset = QTimer(self)
        self._reset.setSingleShot(True)
        self._reset.timeout.connect(lambda: self.setText("Copy"))
        self.clicked.connect(self.copy)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.code)
        self.setText("Copied")
        self.adjustSize()
        self._reset.start(COPIED_FEEDBACK_MS)
        self.copied.emit(self.code)


class CopyButtons:
    """Keeps one CopyCodeButton over each code frame of a text view's document."""

    def __init__(self, viewport: QWidget) -> None:
        self._viewport = viewport
        self.buttons: list[CopyCodeButton] = []

    def update(self, document: QTextDocument) -> None:
        frames = code_frames(document)
        while len(self.buttons) < len(frames):
            self.buttons.append(CopyCodeButton(self._viewport))
        for button in self.buttons[len(frames):]:
            button.hide()
        layout = document.documentLayout()
        for button, frame in zip(self.buttons, frames):
            code = frame.frameFormat().property(CODE_TEXT_PROPERTY)
            if button.code != code and button.text() != "Copy":
                button.setText("Copy")  # a different block now sits here
            button.code = code
            button.adjustSize()
            rect = layout.frameBoundingRect(frame)
            button.move(int(rect.right()) - button.width() - 4, int(rect.top()) + 3)
            button.show()
            button.raise_()
