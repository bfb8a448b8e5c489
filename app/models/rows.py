"""One row of the Models window: title, details, the memory badge, and actions or progress."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

GB = 1e9
BADGE_WORDS = {"fits": "Fits", "tight": "Tight", "wont_fit": "Won\u2019t fit"}


class Badge(QLabel):
    def __init__(self, plan, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.verdict = plan.verdict if plan is not None else None
        if plan is None:
            self.setText("Unknown")
            self.setObjectName("MutedLabel")
            self.setToolTip("The model's configuration could not be read.")
        else:
            self.setText(BADGE_WORDS[plan.verdict])
            self.setObjectName(f"Badge_{plan.verdict}")
            self.setToolTip(plan.message)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)


class ModelRow(QFrame):
    """Title, details and badge on the left; actions (or download progress) on the right."""

    def __init__(self, key: str, title: str, detail: str, plan, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.key = key
        self.setObjectName("ManagerRow")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.title = QLabel(title, self)
        self.title.setObjectName("ManagerRowTitle")
        self.detail = QLabel(detail, self)
        self.detail.setObjectName("ManagerRowDetail")
        self.detail.setWordWrap(True)
        self.badge = Badge(plan, self)
        self.tag = QLabel("", self)
        self.tag.setObjectName("MutedLabel")
        self.error = QLabel("", self)
        self.error.setObjectName("ManagerError")
        self.error.setWordWrap(True)
        self.error.hide()
        self.progress = QProgressBar(self)
        self.progress.setFixedWidth(140)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.progress_label = QLabel("", self)
        self.progress_label.setObjectName("MutedLabel")
        self.progress_label.hide()
        self.speed_up: Optional[QWidget] = None  # the speed-up line, on installed rows
        self.buttons = QHBoxLayout()
        self.buttons.setSpacing(6)

        title_row = QHBoxLayout()
        title_row.setSpacing(8)
        title_row.addWidget(self.title)
        title_row.addWidget(self.badge)
        title_row.addWidget(self.tag)
        title_row.addStretch(1)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addLayout(title_row)
        text.addWidget(self.detail)
        text.addWidget(self.error)
        right = QHBoxLayout()
        right.setSpacing(8)
        right.addWidget(self.progress_label)
        right.addWidget(self.progress)
        right.addLayout(self.buttons)
        top = QHBoxLayout()
        top.addLayout(text, 1)
        top.addLayout(right)
        # Lines added under it (the speed-up) span the whole row: room at 800 x 500 too.
        self._lines = QVBoxLayout(self)
        self._lines.setContentsMargins(16, 10, 16, 10)
        self._lines.setSpacing(2)
        self._lines.addLayout(top)

    def add_button(self, text: str, slot: Callable[[], None], *, primary: bool = False) -> QPushButton:
        button = QPushButton(text, self)
        button.setObjectName("SecondaryButton")  # app/theme.py: flat, like the rest of the app
        button.setAutoDefault(False)
        if primary:
            button.setDefault(False)
        button.clicked.connect(lambda _checked=False: slot())  # don't pass ``checked`` to the slot
        self.buttons.addWidget(button)
        return button

    def add_line(self, widget: QWidget) -> None:
        """A line of controls under the row, its full width (e.g. the model's speed-up)."""
        self._lines.addWidget(widget)

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


def size_words(size_bytes: int) -> str:
    if size_bytes >= GB:
        return f"{size_bytes / GB:.1f} GB"
    return f"{size_bytes / 1e6:.0f} MB"
