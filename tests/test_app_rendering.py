"""Model output is untrusted: rendering fetches nothing, runs no HTML, opens only safe links."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QColor, QImage, QTextDocument, QTextFrame
from PySide6.QtWidgets import QApplication

from app.chat.rendering import RenderColors, SafeDocument, SafeTextView, monospace_font


@pytest.fixture
def view(qtbot) -> SafeTextView:
    widget = SafeTextView()
    qtbot.addWidget(widget)
    widget.resize(600, 200)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def colors() -> RenderColors:
    return RenderColors.from_palette(QApplication.palette())


class Listener:
    """A local TCP port that records whether anything connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _images(document: QTextDocument) -> list[str]:
    names = []
    block = document.begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            fmt = it.fragment().charFormat()
            if fmt.isImageFormat():
                names.append(fmt.toImageFormat().name())
            it += 1
        block = block.next()
    return names


def _write_png(path: Path) -> None:
    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    image.fill(QColor("red"))
    assert image.save(str(path))


def test_a_remote_image_is_never_requested(qtbot, view: SafeTextView) -> None:
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/tracker.png"
        view.set_markdown(f"Look: ![chart]({url}) done", colors())
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        assert listener.connections == 0
    finally:
        listener.close()
    assert _images(view.document()) == []
    assert view.refused_resources == []  # the image was gone before any layout asked for it
    assert view.toPlainText() == "Look: [image: chart] done"
    assert url in view.document().toHtml()  # kept as a link the user may choose to open


def test_a_local_file_image_is_not_read(qtbot, view: SafeTextView, tmp_path: Path) -> None:
    picture = tmp_path / "secret.png"
    _write_png(picture)
    view.set_markdown(f"![a]({picture.as_uri()}) ![b](secret.png)", colors())
    QApplication.processEvents()
    assert _images(view.document()) == []
    assert view.toPlainText() == "[image: a] [image: b]"


def test_the_document_refuses_resources_even_when_asked_directly(qtbot, tmp_path: Path) -> None:
    picture = tmp_path / "secret.png"
    _write_png(picture)
    document = SafeDocument()
    document.setHtml(f'<img src="{picture.as_uri()}"> <img src="http://example.invalid/x.png">')
    document.documentLayout().documentSize()  # lay out: Qt now asks for the images
    assert set(document.refused_resources) == {picture.as_uri(), "http://example.invalid/x.png"}
    served = document.resource(QTextDocument.ResourceType.ImageResource.value, QUrl(picture.as_uri()))
    assert isinstance(served, QImage) and served.size().width() == 1  # the placeholder, not the 8x8 file


def test_html_in_model_output_is_shown_as_text(qtbot, view: SafeTextView) -> None:
    view.set_markdown('<b>bold</b> <img src="http://x/y.png"> <script>alert(1)</script>', colors())
    text = view.toPlainText()
    assert "<b>bold</b>" in text and "<script>alert(1)</script>" in text
    assert _images(view.document()) == []


def test_links_open_in_the_browser_only_for_safe_schemes(qtbot, view: SafeTextView) -> None:
    opened: list[str] = []
    view.open_url = lambda url: opened.append(url.toString()) or True
    view.set_markdown("[site](https://qwen.ai) [mail](mailto:a@b.c) [file](file:///etc/passwd)", colors())
    for url in ("https://qwen.ai", "mailto:a@b.c", "file:///etc/passwd", "javascript:alert(1)", "qrc:/x"):
        view.anchorClicked.emit(QUrl(url))
    assert opened == ["https://qwen.ai", "mailto:a@b.c"]
    assert not view.openLinks() and not view.openExternalLinks()


def test_code_blocks_get_a_tinted_monospace_frame(qtbot, view: SafeTextView) -> None:
    palette_colors = colors()
    view.set_markdown("Intro with `inline`\n\n```python\ndef f():\n    return 1\n```\n\nAfter", palette_colors)
    frames = [f for f in view.document().rootFrame().childFrames() if type(f) is QTextFrame]
    assert len(frames) == 1
    frame = frames[0]
    assert frame.frameFormat().background().color() == palette_colors.code_background
    cursor = frame.firstCursorPosition()
    cursor.movePosition(cursor.MoveOperation.NextCharacter)
    assert cursor.block().text() == "def f():"
    assert cursor.charFormat().font().family() == monospace_font().family()
    assert view.toPlainText().startswith("Intro with inline") and view.toPlainText().rstrip().endswith("After")


def test_the_view_grows_with_its_content(qtbot, view: SafeTextView) -> None:
    view.set_markdown("one line", colors())
    short = view.height()
    view.set_markdown("\n\n".join(f"Paragraph {i}" for i in range(12)), colors())
    assert view.height() > 4 * short


def test_long_code_lines_wrap_inside_the_view(qtbot, view: SafeTextView) -> None:
    long_line = "result = compute(" + ", ".join(f"argument_{n}" for n in range(40)) + ")"
    view.set_markdown(f"```python\n{long_line}\nshort = 1\n```", colors())
    document = view.document()
    # Nothing is laid out beyond the view's width (it has no horizontal scroll bar) ...
    assert document.size().width() <= view.viewport().width() + 1
    block = document.begin()
    while block.isValid() and block.text() != long_line:
        block = block.next()
    # ... because the long line wraps, while the text itself (what Copy takes) stays one line.
    assert block.isValid() and block.layout().lineCount() > 1
    assert long_line in view.toPlainText().splitlines()


def test_code_blocks_have_no_blank_line_around_them(qtbot, view: SafeTextView) -> None:
    view.set_markdown("Before\n\n```\ncode\n```\n\nAfter", colors())
    document = view.document()
    layout = document.documentLayout()
    rects = {}
    block = document.begin()
    while block.isValid():
        if block.isVisible():
            rects[block.text()] = layout.blockBoundingRect(block)
        block = block.next()
    assert set(rects) == {"Before", "code", "After"}  # the empty paragraphs are out of the layout
    line = view.fontMetrics().lineSpacing()
    # Only margins and the frame's padding between the paragraphs and the code: no empty line.
    assert rects["code"].top() - rects["Before"].bottom() < line * 2
    assert rects["After"].top() - rects["code"].bottom() < line * 2
