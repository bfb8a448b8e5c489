"""The top bar's reasoning popup, beside the Thinking toggle: effort and earlier reasoning.

Shown only for models whose template takes a reasoning effort (Qwen3.8) or offers to keep
earlier turns' reasoning (Qwen3.6, 3.8); what each model offers comes from its ``EngineInfo``.
The button only reports choices; the window stores them in ``Settings``.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QToolButton, QWidget

from app.chat.reasoning import can_preserve_thinking, effective_effort, effort_label, effort_levels

CHEVRON = " \u25BE"  # the popup's own arrow is hidden by the theme: this one sits in the text

HISTORY_CHOICES: tuple[tuple[str, str], ...] = (
    ("default", "Model\u2019s Default"),
    ("keep", "Keep in History"),
    ("drop", "Drop from History"),
)


class ReasoningButton(QToolButton):
    effortChosen = Signal(str)
    historyReasoningChosen = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ReasoningButton")
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setMenu(QMenu(self))
        self._levels: tuple[str, ...] = ()
        self._preserve = False
        self._preserve_default = False
        self._effort = ""
        self._history = "default"
        self._thinking = True
        self.effort_actions: dict[str, QAction] = {}
        self.history_actions: dict[str, QAction] = {}
        self.hide()
        self.menu().menuAction().setVisible(False)

    # ------------------------------------------------------------------ API
    def set_model(self, info: object) -> None:
        """Offer what the loaded model's template takes (None: no model: nothing to offer)."""
        self._levels = effort_levels(info) if info is not None else ()
        self._preserve = can_preserve_thinking(info) if info is not None else False
        self._preserve_default = bool(getattr(info, "preserves_thinking_by_default", False))
        self._rebuild()

    def set_choices(self, effort: str, history_reasoning: str) -> None:
        self._effort, self._history = effort, history_reasoning
        self._sync()

    def set_thinking(self, on: bool) -> None:
        """Effort only matters while the model thinks: greyed out, not hidden, when it doesn't."""
        self._thinking = on
        self._sync()

    @property
    def offered(self) -> bool:
        return bool(self._levels or self._preserve)

    @property
    def effort_in_effect(self) -> Optional[str]:
        return effective_effort(self._effort, self._levels)

    # -------------------------------------------------------------- building
    def _rebuild(self) -> None:
        menu = self.menu()
        menu.clear()
        for group in menu.findChildren(QActionGroup):  # clear() leaves the groups behind
            group.setParent(None)
            group.deleteLater()
        self.effort_actions, self.history_actions = {}, {}
        if self._levels:
            self._header(menu, "Reasoning Effort")
            group = QActionGroup(menu)
            for level in self._levels:
                action = self._choice(menu, group, effort_label(level), level)
                action.triggered.connect(lambda _=False, level=level: self._choose_effort(level))
                self.effort_actions[level] = action
        if self._preserve:
            if self._levels:
                menu.addSeparator()
            self._header(menu, "Earlier Answers\u2019 Reasoning")
            group = QActionGroup(menu)
            for value, label in HISTORY_CHOICES:
                if value == "default":  # say what the default is: Qwen3.8 keeps, Qwen3.6 drops
                    label += " (Keep)" if self._preserve_default else " (Drop)"
                action = self._choice(menu, group, label, value)
                action.triggered.connect(lambda _=False, value=value: self._choose_history(value))
                self.history_actions[value] = action
        self.setVisible(self.offered)
        menu.menuAction().setVisible(self.offered)  # also the Model menu's Reasoning submenu
        self._sync()

    @staticmethod
    def _header(menu: QMenu, text: str) -> None:
        # A disabled item names the group, as macOS menus do (section titles don't show there).
        menu.addAction(text).setEnabled(False)

    @staticmethod
    def _choice(menu: QMenu, group: QActionGroup, text: str, data: str) -> QAction:
        action = menu.addAction(text)
        action.setCheckable(True)
        action.setData(data)
        group.addAction(action)
        return action

    def _choose_effort(self, level: str) -> None:
        self._effort = level
        self._sync()
        self.effortChosen.emit(level)

    def _choose_history(self, value: str) -> None:
        self._history = value
        self._sync()
        self.historyReasoningChosen.emit(value)

    def _sync(self) -> None:
        level = self.effort_in_effect
        for key, action in self.effort_actions.items():
            action.setChecked(key == level)
            action.setEnabled(self._thinking)
        history = self._history if self._history in self.history_actions else "default"
        for key, action in self.history_actions.items():
            action.setChecked(key == history)
        if level is not None:
            self.setText(f"Effort: {effort_label(level)}{CHEVRON}")
            tip = "How hard the model thinks before it answers"
            self.setToolTip(tip if self._thinking else tip + " (turn Thinking on to use it)")
        else:
            self.setText(f"Reasoning{CHEVRON}")
            self.setToolTip("Whether earlier answers\u2019 reasoning stays in the conversation")
        self.setProperty("dimmed", level is not None and not self._thinking)
        self.style().unpolish(self)
        self.style().polish(self)
