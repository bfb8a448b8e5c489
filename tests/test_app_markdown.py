"""How answers look: highlighted code with a Copy button, LaTeX kept exactly, aligned table
headers, block quotes with a bar, and still nothing fetched."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QTextCursor, QTextDocument, QTextFrameFormat
from PySide6.QtWidgets import QApplication, QToolButton

from app.chat.math_text import MATH_PROPERTY, protect
from app.chat.rendering import RenderColors, SafeTextView, monospace_font
from tests.test_app_rendering import Listener


@pytest.fixture
def view(qtbot) -> SafeTextView:
    widget = SafeTextView()
    qtbot.addWidget(widget)
    widget.resize(640, 200)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def colors() -> RenderColors:
    return RenderColors.from_palette(QApplication.palette())


def _format_of(document: QTextDocument, text: str):
    """The char format of the first character of ``text`` in ``document``."""
    found = document.find(text, 0, QTextDocument.FindFlag.FindCaseSensitively)
    assert not found.isNull(), f"{text!r} not in {document.toPlainText()!r}"
    cursor = QTextCursor(document)
    cursor.setPosition(found.selectionStart() + 1)
    return cursor.charFormat()


CODE = 'def greet(name):\n    return "hi " + name  # say hello\n\nclass Box:   \n    pass\t\n'


def test_fenced_code_gets_coloured_tokens(qtbot, view: SafeTextView) -> None:
    view.set_markdown(f"Look:\n\n```python\n{CODE}```\n", colors())
    document = view.document()
    text = colors().text
    keyword = _format_of(document, "def ").foreground().color()
    string = _format_of(document, '"hi "').foreground().color()
    comment = _format_of(document, "# say")
    plain = _format_of(document, "greet").foreground()
    assert keyword.isValid() and keyword != text
    assert string != keyword and string != text
    assert comment.foreground().color() not in (text, keyword) and comment.fontItalic()
    assert _format_of(document, "class ").foreground().color() == keyword
    # Prose stays in the text colour.
    assert _format_of(document, "Look").foreground().color() != keyword
    assert plain.color() != keyword


def test_highlight_colours_suit_dark_backgrounds(qtbot, view: SafeTextView) -> None:
    light = colors()
    dark = RenderColors(text=light.text, muted=light.muted, code_background=light.code_background.darker(500),
                        code_border=light.code_border, link=light.link)
    view.set_markdown("```python\nimport os\n```", light)
    on_light = _format_of(view.document(), "import").foreground().color()
    view.set_markdown("```python\nimport os\n```", dark)
    on_dark = _format_of(view.document(), "import").foreground().color()
    assert on_light != on_dark and on_dark.lightness() > on_light.lightness()


def test_unknown_languages_are_left_plain(qtbot, view: SafeTextView) -> None:
    view.set_markdown("```no-such-language\ndef x\n```", colors())
    assert _format_of(view.document(), "def").foreground().color() != _keyword_colour(qtbot)


def _keyword_colour(qtbot) -> object:
    other = SafeTextView()
    qtbot.addWidget(other)
    other.set_markdown("```python\ndef x(): pass\n```", colors())
    return _format_of(other.document(), "def").foreground().color()


def test_copy_button_puts_the_exact_code_on_the_clipboard(qtbot, view: SafeTextView) -> None:
    second = "echo 'two' | tr a-z A-Z"
    view.set_markdown(f"```python\n{CODE}```\n\nand\n\n```sh\n{second}\n```", colors())
    qtbot.wait(10)
    buttons = [b for b in view.findChildren(QToolButton, "CopyCodeButton") if b.isVisible()]
    assert len(buttons) == 2
    assert all(b.text() == "Copy" for b in buttons)
    # Each button sits over its own block, in the block's top-right corner.
    assert buttons[0].y() < buttons[1].y()
    QGuiApplication.clipboard().clear()
    qtbot.mouseClick(buttons[0], Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == CODE.rstrip("\n")
    assert buttons[0].text() == "Copied"
    qtbot.mouseClick(buttons[1], Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == second
    qtbot.waitUntil(lambda: buttons[0].text() == "Copy", timeout=3000)
    # The document's text is the code alone: selecting and copying takes no button label.
    assert "Copy" not in view.toPlainText()


def test_copy_buttons_follow_the_blocks_when_rerendered(qtbot, view: SafeTextView) -> None:
    view.set_markdown("```\nfirst\n```", colors())
    view.set_markdown("no code now", colors())
    assert not [b for b in view.findChildren(QToolButton, "CopyCodeButton") if b.isVisible()]
    view.set_markdown("```\nagain\n```", colors())
    buttons = [b for b in view.findChildren(QToolButton, "CopyCodeButton") if b.isVisible()]
    assert len(buttons) == 1
    buttons[0].click()
    assert QGuiApplication.clipboard().text() == "again"


LATEX = [
    ("Inline $a\\,b \\\\ c_1*d_2*$ here.", "a\\,b \\\\ c_1*d_2*"),
    ("Paren \\(x_{i}^{2} + \\alpha\\) here.", "x_{i}^{2} + \\alpha"),
    ("$$\n\\int_0^1 x\\,dx = \\frac{1}{2}\n$$", "\\int_0^1 x\\,dx = \\frac{1}{2}"),
    ("\\[ \\sum_{k=1}^{n} k = \\frac{n(n+1)}{2} \\]", "\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}"),
    ("| x | y |\n|---|---|\n| $a_1*b_2*$ | 2 |", "a_1*b_2*"),
]


@pytest.mark.parametrize("markdown,source", LATEX)
def test_latex_survives_character_for_character(qtbot, view: SafeTextView, markdown: str, source: str) -> None:
    view.set_markdown(markdown, colors())
    plain = view.toPlainText()
    assert source in plain
    fmt = _format_of(view.document(), source)
    assert fmt.boolProperty(MATH_PROPERTY) and fmt.font().family() == monospace_font().family()
    assert "QDMATH" not in plain


def test_display_math_is_centred_on_its_own_line(qtbot, view: SafeTextView) -> None:
    view.set_markdown("Before\n\n$$\nE = mc^2\n$$\n\nAfter", colors())
    cursor = view.document().find("E = mc^2")
    assert cursor.block().text() == "E = mc^2"
    assert cursor.blockFormat().alignment() & Qt.AlignmentFlag.AlignHCenter


def test_dollars_in_prose_and_math_in_code_stay_as_written(qtbot, view: SafeTextView) -> None:
    view.set_markdown("It costs $5 and $10.\n\nCode `$x_1$` and\n\n```\n$y_2$ \\(z\\)\n```", colors())
    plain = view.toPlainText()
    assert "It costs $5 and $10." in plain
    assert "$x_1$" in plain and "$y_2$ \\(z\\)" in plain
    assert not _format_of(view.document(), "$x_1$").boolProperty(MATH_PROPERTY)
    assert protect("no math here") == ("no math here", {})


def test_table_header_cells_take_their_columns_alignment(qtbot, view: SafeTextView) -> None:
    view.set_markdown("| Name | Count | Price |\n|:--|:-:|--:|\n| apple | 3 | 1.50 |\n| kiwi | 12 | 0.25 |", colors())
    tables = [f for f in view.document().rootFrame().childFrames() if hasattr(f, "cellAt")]
    assert len(tables) == 1
    table = tables[0]
    mask = Qt.AlignmentFlag.AlignHorizontal_Mask
    for column in range(3):
        header = table.cellAt(0, column).firstCursorPosition().blockFormat().alignment() & mask
        body = [table.cellAt(row, column).firstCursorPosition().blockFormat().alignment() & mask for row in (1, 2)]
        assert body[0] == body[1] == header, (column, header, body)
    assert table.cellAt(0, 2).firstCursorPosition().blockFormat().alignment() & Qt.AlignmentFlag.AlignRight


def test_block_quotes_get_a_bar_down_their_left_side(qtbot, view: SafeTextView) -> None:
    view.set_markdown("Said:\n\n> quoted *words*\n> more\n\nAfter", colors())
    cursor = view.document().find("quoted")
    table = cursor.currentTable()
    assert table is not None, "the quote is not framed"
    cell = table.cellAt(cursor).format().toTableCellFormat()
    assert cell.leftBorder() >= 2 and cell.leftBorderStyle() == QTextFrameFormat.BorderStyle.BorderStyle_Solid
    assert cell.leftBorderBrush().color().alpha() > 0
    assert cell.rightBorder() == 0 and cell.topBorder() == 0 and cell.bottomBorder() == 0
    # Its words are all there, emphasis kept; the text around it is outside the bar.
    assert "quoted words more" in view.toPlainText()
    assert _format_of(view.document(), "words").fontItalic()
    assert view.document().find("After").currentTable() is None
    # The bar is drawn: a column of pixels left of the text differs from the background.
    image = view.viewport().grab().toImage()
    rect = view.document().documentLayout().blockBoundingRect(cursor.block())
    y = int(rect.center().y())
    background = image.pixelColor(view.viewport().width() - 2, y)
    assert any(image.pixelColor(x, y) != background for x in range(0, int(rect.left())))


def test_nothing_in_rich_answers_is_fetched(qtbot, view: SafeTextView) -> None:
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/x.png"
        markdown = (
            f"> ![q]({url}) quoted\n\n| a | b |\n|---|---|\n| ![t]({url}) | [l]({url}) |\n\n"
            f"Math $x$ ![m]({url})\n\n```python\nimport os  # ![c]({url})\n```"
        )
        view.set_markdown(markdown, colors())
        view.grab()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            QApplication.processEvents()
        assert listener.connections == 0
        assert all("127.0.0.1" not in name for name in _image_names(view.document()))
    finally:
        listener.close()


def _image_names(document: QTextDocument) -> list[str]:
    names = []
    block = document.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            if it.fragment().charFormat().isImageFormat():
                names.append(it.fragment().charFormat().toImageFormat().name())
            it += 1
        block = block.next()
    return names


def test_a_streamed_answer_in_the_transcript_gets_working_copy_buttons(qtbot) -> None:
    from app.chat.message_view import MessageView
    from app.chat.store import StoredMessage

    message = StoredMessage(id=7, conversation_id="c", role="assistant", content="", status="complete")
    view = MessageView(message, colors())
    qtbot.addWidget(view)
    view.resize(640, 400)
    view.show()
    view.begin_streaming()
    answer = "Try:\n\n```python\nprint('streamed')\n```\n\nDone."
    for piece in (answer[:12], answer[12:30], answer[30:]):
        view.append_answer(piece)
        qtbot.wait(60)
    view.finish("complete")
    buttons = [b for b in view.body.findChildren(QToolButton, "CopyCodeButton") if b.isVisible()]
    assert len(buttons) == 1
    buttons[0].click()
    assert QGuiApplication.clipboard().text() == "print('streamed')"
    view.copy_to_clipboard()  # the message's own Copy still takes the whole Markdown
    assert QGuiApplication.clipboard().text() == answer
