"""The "Speed-up" line of an installed model's row in the Models window.

A pop-up menu (Off / Built-in (MTP) / Draft model: <name>) and the "Quote-aware drafting for
documents" switch. It emits ``changed(SpeedUp)``; the Models window stores it per model.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QSizePolicy, QWidget

from app.models.installed import InstalledModel
from app.models.speed_up import SpeedUp

SPEED_UP_TIP = (
    "Speculative decoding: a helper guesses several words ahead and this model checks them all "
    "in one step. The answers stay the same; they often come faster.\n"
    "\u2022 Built-in (MTP): the model's own prediction heads, no extra memory.\n"
    "\u2022 Draft model: a smaller model of the same family, loaded beside this one "
    "(its memory too).\nIf it turns out slower for an answer, it switches itself off."
)
QUOTE_TIP = (
    "For long prompts (documents, pastes) guess the next words by copying from the prompt, "
    "where answers quote it. No extra memory; switches itself off where it doesn't pay."
)


class SpeedUpControls(QWidget):
    changed = Signal(object)  # SpeedUp

    def __init__(
        self, choice: SpeedUp, drafts: list[InstalledModel], has_mtp: bool, parent: Optional[QWidget] = None,
        *, draft_names: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(parent)
        self._choice = choice
        label = QLabel("Speed-up:", self)
        label.setObjectName("ManagerRowDetail")
        self.menu = QComboBox(self)
        self.menu.setToolTip(SPEED_UP_TIP)
        self.menu.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.menu.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.menu.setMinimumWidth(200)  # the rows' switches line up (longer names still fit)
        # Item data "off", "mtp" or "draft:<key>" (strings: Qt hands tuples back as lists).
        self.menu.addItem("Off", "off")
        if has_mtp:
            self.menu.addItem("Built-in (MTP)", "mtp")
        for model in drafts:
            name = (draft_names or {}).get(model.key, model.title)
            self.menu.addItem(f"Draft model: {name}", f"draft:{model.key}")
        if len(drafts) == 0 and not has_mtp:
            self.menu.setToolTip(SPEED_UP_TIP + "\n\nNo smaller model of the same family is on this Mac.")
        current = f"draft:{choice.draft}" if choice.mode == "draft" else choice.mode
        self.menu.setCurrentIndex(max(0, self.menu.findData(current)))
        self.quote = QCheckBox("Quote-aware drafting for documents", self)
        self.quote.setToolTip(QUOTE_TIP)
        self.quote.setChecked(choice.quote_lookup)
        self.menu.currentIndexChanged.connect(self._emit)
        self.quote.toggled.connect(self._emit)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 4, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(label)
        layout.addWidget(self.menu)
        layout.addSpacing(8)
        layout.addWidget(self.quote)
        layout.addStretch(1)

    @property
    def choice(self) -> SpeedUp:
        return self._choice

    def options(self) -> list[str]:
        return [self.menu.itemText(i) for i in range(self.menu.count())]

    def _emit(self, *_args: object) -> None:
        mode, _, draft = str(self.menu.currentData()).partition(":")
        self._choice = SpeedUp(mode, draft, self.quote.isChecked())  # type: ignore[arg-type]
        self.changed.emit(self._choice)
