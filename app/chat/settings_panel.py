"""Chat Settings (Cmd+;): one chat's system prompt and, under Advanced, its sampling, answer
length and context.

The fields open on what the chat uses now: its own values, else the defaults (the app's system
prompt; Qwen's recommended sampling for the mode in effect). Only values that differ from the
defaults are kept as the chat's own, so a chat left on the defaults follows them as they change
(thinking switched on: 0.6 instead of 0.7). "Use Defaults" puts every field back.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.chat_settings import ChatDefaults, ChatSettings, greedy_warning
from app.chat.message_view import model_label

MAX_ANSWER_TOKENS = 131072


class ChatSettingsDialog(QDialog):
    settingsApplied = Signal(object)  # ChatSettings

    def __init__(self, current: ChatSettings, defaults: ChatDefaults, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ChatSettings")
        self.setWindowTitle("Chat Settings")
        self.setWindowModality(Qt.WindowModality.WindowModal)  # a sheet on macOS
        self.setMinimumWidth(440)
        self.defaults = defaults

        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 16, 20, 16)
        layout.setSpacing(8)
        heading = QLabel("System prompt for this chat", self)
        heading.setObjectName("SectionTitle")
        layout.addWidget(heading)
        self.system_prompt = QPlainTextEdit(self)
        self.system_prompt.setObjectName("ChatSystemPrompt")
        self.system_prompt.setPlaceholderText(
            f"The app\u2019s prompt: {_short(defaults.system_prompt)}" if defaults.system_prompt.strip()
            else "None. Describe how the model should answer in this chat.")
        self.system_prompt.setFixedHeight(84)
        layout.addWidget(self.system_prompt)

        self.advanced_toggle = QToolButton(self)
        self.advanced_toggle.setObjectName("DisclosureButton")
        self.advanced_toggle.setAutoRaise(True)  # a disclosure triangle, not a button
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setText("Advanced")
        self.advanced_toggle.clicked.connect(lambda: self.set_advanced_shown(self.advanced.isHidden()))
        layout.addWidget(self.advanced_toggle)

        self.advanced = QWidget(self)
        form = QFormLayout(self.advanced)
        form.setContentsMargins(18, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
        self.temperature = _decimal(self.advanced, 0.0, 2.0, 0.05)
        self.top_p = _decimal(self.advanced, 0.01, 1.0, 0.05)
        self.top_k = QSpinBox(self.advanced)
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("Off")
        self.max_tokens = QSpinBox(self.advanced)
        self.max_tokens.setRange(16, MAX_ANSWER_TOKENS)
        self.max_tokens.setSingleStep(256)
        self.max_tokens.setGroupSeparatorShown(True)
        self.max_tokens.setSuffix(" tokens")
        self.context = QComboBox(self.advanced)
        self.context.addItem(_context_text("Native", defaults.native_context), False)
        self.context.addItem(_context_text("Long context (YaRN)", defaults.long_context), True)
        if defaults.long_context is None:
            self.context.model().item(1).setEnabled(False)  # type: ignore[attr-defined]
            self.context.setToolTip("The loaded model has no published long-context (YaRN) setting.")
        self.greedy = QLabel(self.advanced)
        self.greedy.setObjectName("WarningNote")
        self.greedy.setWordWrap(True)
        self.greedy.hide()
        self.temperature.valueChanged.connect(self._check_greedy)
        mode = "thinking" if defaults.thinking else "without thinking"
        source = f"Qwen\u2019s recommended values {mode}" if defaults.recommended else "The preset chosen in Settings"
        self.recommendation = QLabel(
            f"{source}: temperature {defaults.sampling.temperature:g}, top-p {defaults.sampling.top_p:g}, "
            f"top-k {defaults.sampling.top_k}.", self.advanced)
        self.recommendation.setObjectName("MutedLabel")
        self.recommendation.setWordWrap(True)
        form.addRow("Temperature", self.temperature)
        form.addRow(self.greedy)
        form.addRow("Top-p", self.top_p)
        form.addRow("Top-k", self.top_k)
        form.addRow(self.recommendation)  # the whole width: one line at the sheet's width
        form.addRow("Max answer length", self.max_tokens)
        form.addRow("Context length", self.context)
        layout.addWidget(self.advanced)
        self.advanced.hide()

        self.model_label = QLabel(
            f"Answered by {model_label(defaults.model)}" if defaults.model else "No answers in this chat yet.", self)
        self.model_label.setObjectName("MutedLabel")
        self.model_label.setToolTip(defaults.model or "")
        layout.addWidget(self.model_label)
        layout.addStretch(1)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel | QDialogButtonBox.StandardButton.Save, self)
        self.reset_button = QPushButton("Use Defaults", self)
        buttons.addButton(self.reset_button, QDialogButtonBox.ButtonRole.ResetRole)
        self.reset_button.clicked.connect(lambda: self.show_settings(ChatSettings()))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.show_settings(current)
        # Open on Advanced when the chat already has advanced values of its own.
        self.set_advanced_shown(current.overrides_sampling or current.max_tokens is not None
                                or bool(current.long_context))

    def set_advanced_shown(self, shown: bool) -> None:
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.advanced.setVisible(shown)
        self.adjustSize()

    def show_settings(self, chat: ChatSettings) -> None:
        d = self.defaults
        self.system_prompt.setPlainText(chat.system_prompt if chat.system_prompt is not None else "")
        self.temperature.setValue(d.sampling.temperature if chat.temperature is None else chat.temperature)
        self.top_p.setValue(d.sampling.top_p if chat.top_p is None else chat.top_p)
        self.top_k.setValue(d.sampling.top_k if chat.top_k is None else chat.top_k)
        self.max_tokens.setValue(d.max_tokens if chat.max_tokens is None else chat.max_tokens)
        self.context.setCurrentIndex(1 if chat.long_context and d.long_context is not None else 0)
        self._check_greedy()

    def settings(self) -> ChatSettings:
        """The chat's own values: what differs from the defaults (an empty prompt: the app's)."""
        d = self.defaults
        prompt = self.system_prompt.toPlainText().strip()

        def own(value, default):
            return None if value == default else value

        return ChatSettings(
            system_prompt=prompt if prompt and prompt != d.system_prompt.strip() else None,
            temperature=own(round(self.temperature.value(), 2), round(d.sampling.temperature, 2)),
            top_p=own(round(self.top_p.value(), 2), round(d.sampling.top_p, 2)),
            top_k=own(self.top_k.value(), d.sampling.top_k),
            max_tokens=own(self.max_tokens.value(), d.max_tokens),
            long_context=True if self.context.currentData() else None,
        )

    def _check_greedy(self) -> None:
        warning = greedy_warning(self.temperature.value())
        self.greedy.setText(warning)
        self.greedy.setVisible(bool(warning))

    def accept(self) -> None:
        self.settingsApplied.emit(self.settings())
        super().accept()


def _decimal(parent: QWidget, low: float, high: float, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox(parent)
    box.setRange(low, high)
    box.setDecimals(2)
    box.setSingleStep(step)
    return box


def _context_text(name: str, tokens: Optional[int]) -> str:
    return f"{name} \u2013 {tokens:,} tokens" if tokens else name


def _short(text: str, limit: int = 60) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[:limit].rstrip() + "\u2026"
