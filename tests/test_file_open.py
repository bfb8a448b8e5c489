"""Dock drops / "Open With": QFileOpenEvents become one batched, lossless signal."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QUrl
from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from app.documents.file_open import FileOpenCollector


@pytest.fixture
def collector(qapp: QApplication):
    collector = FileOpenCollector(qapp)
    yield collector
    collector.uninstall()
    collector.deleteLater()


def _post_file(app: QApplication, path: Path) -> None:
    QCoreApplication.postEvent(app, QFileOpenEvent(str(path)))


def test_posted_file_open_events_arrive_as_one_batch(qtbot, qapp, collector, tmp_path):
    first, second = tmp_path / "report.pdf", tmp_path / "notes.md"
    collector.start_delivering()
    received: list[list[str]] = []
    collector.files_opened.connect(received.append)

    with qtbot.waitSignal(collector.files_opened, timeout=2000):
        _post_file(qapp, first)
        _post_file(qapp, second)
        _post_file(qapp, first)  # macOS can repeat a file; the consumer must not open it twice

    qtbot.wait(20)  # nothing else trickles in after the batch
    assert received == [[str(first), str(second)]]
    assert collector.pending() == []


def test_files_dropped_during_start_up_are_held_until_delivery_starts(qtbot, qapp, collector, tmp_path):
    early = tmp_path / "dropped on the dock icon.docx"
    received: list[list[str]] = []
    collector.files_opened.connect(received.append)

    _post_file(qapp, early)
    qtbot.wait(20)
    assert received == []  # the main window is not ready yet: keep it, do not drop it
    assert collector.pending() == [str(early)]

    with qtbot.waitSignal(collector.files_opened, timeout=2000) as blocker:
        collector.start_delivering()
    assert blocker.args == [[str(early)]]


def test_file_urls_are_accepted_and_other_urls_ignored(qtbot, qapp, collector, tmp_path):
    page = tmp_path / "page.html"
    collector.start_delivering()
    received: list[list[str]] = []
    collector.files_opened.connect(received.append)

    QCoreApplication.postEvent(qapp, QFileOpenEvent(QUrl("qwendesk://not-a-file")))
    with qtbot.waitSignal(collector.files_opened, timeout=2000):
        QCoreApplication.postEvent(qapp, QFileOpenEvent(QUrl.fromLocalFile(str(page))))
    assert received == [[str(page)]]


def test_uninstalled_collector_no_longer_sees_events(qtbot, qapp, collector, tmp_path):
    # Not delivering: anything the filter caught would stay visible in pending().
    collector.uninstall()
    _post_file(qapp, tmp_path / "late.txt")
    qtbot.wait(20)
    assert collector.pending() == []
