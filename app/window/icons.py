"""File icons for attachment chips, from the platform (Finder's icon for a PDF on macOS).

An emoji would do on a Mac, but not everywhere (no emoji font: an empty box), and a real icon
matches the rest of the desktop.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QFileInfo, QSize, Qt
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QFileIconProvider, QLabel, QStyle, QWidget

ICON_SIZE = 16


def file_icon(path: str) -> QIcon:
    """The desktop's icon for ``path``'s type; a generic document icon where it has none."""
    icon = QFileIconProvider().icon(QFileInfo(path)) if path else QIcon()
    if icon.pixmap(ICON_SIZE).isNull():  # null, or a theme that draws nothing at this size
        icon = QApplication.style().standardIcon(QStyle.StandardPixmap.SP_FileIcon)
    return icon


def file_icon_label(path: str, parent: Optional[QWidget] = None, size: int = ICON_SIZE) -> QLabel:
    label = QLabel(parent)
    label.setObjectName("FileIcon")
    label.setPixmap(file_icon(path).pixmap(QSize(size, size), label.devicePixelRatioF()))
    label.setFixedSize(size, size)
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return label
