"""The Settings window (Cmd+,): system prompt, sampling, theme, menu bar only, Quick Ask shortcut,
the local server, the prompt cache on disk.

Like a Mac settings window, every change applies at once (no OK button): each control writes
its setting and ``settingChanged(name)`` tells the app to act on it (re-theme, hide the Dock
icon, ...). The system prompt is saved as it is typed, after a short pause, and when the window
closes. A Quick Ask shortcut is checked before it is kept: one that cannot be a global shortcut,
or that another app owns, is refused with the reason and the previous shortcut stays.
"""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import QTimer, Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QKeySequenceEdit,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollArea,
    QSizePolicy,
    QSpacerItem,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.paths import prompt_cache_dir
from app.settings import SAMPLING_PRESETS, Settings
from app.window.prompt_cache_controls import PromptCacheControls
from app.quick_ask.tray import parse_shortcut

THEME_CHOICES: tuple[tuple[str, str], ...] = (("system", "Use System Setting"), ("light", "Light"), ("dark", "Dark"))
PROMPT_SAVE_DELAY_MS = 500
# The window leaves this much of the screen's free height (title bar, a glimpse of what is behind).
SCREEN_MARGIN = 80
MIN_HEIGHT = 360

# Names carried by ``settingChanged``: the Settings attributes they stand for.
SYSTEM_PROMPT = "system_prompt"
SAMPLING_PRESET = "sampling_preset"
THEME = "theme"
MENU_BAR_ONLY = "menu_bar_only"
QUICK_ASK_SHORTCUT = "quick_ask_shortcut"
SERVER_ENABLED = "server_enabled"
SERVER_PORT = "server_port"
SERVER_NETWORK = "server_allow_network"
PROMPT_CACHE_BUDGET = "prompt_cache_budget_bytes"
SERVER_SETTINGS = (SERVER_ENABLED, SERVER_PORT, SERVER_NETWORK)

# Registers a global shortcut ("" = none); returns why it could not, or "".
ShortcutApplier = Callable[[str], str]


def shortcut_text(sequence: QKeySequence) -> str:
    """The portable form stored in the settings ("Alt+Space"); "" for no shortcut."""
    return sequence.toString(QKeySequence.SequenceFormat.PortableText)


class PreferencesDialog(QDialog):
    settingChanged = Signal(str)

    def __init__(
        self,
        settings: Settings,
        parent: Optional[QWidget] = None,
        *,
        menu_bar_available: bool = False,
        shortcuts_supported: bool = False,
        shortcut_applier: Optional[ShortcutApplier] = None,
        server: Optional[object] = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("Preferences")
        self.setWindowTitle("Settings")
        self._settings = settings
        self._shortcut_applier = shortcut_applier

        self.system_prompt_edit = QPlainTextEdit(self)
        self.system_prompt_edit.setObjectName("SystemPromptEdit")
        self.system_prompt_edit.setPlaceholderText("For example: Answer briefly. Use British spelling.")
        self.system_prompt_edit.setPlainText(settings.system_prompt)
        self.system_prompt_edit.setTabChangesFocus(True)
        self.system_prompt_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 5 + 16)
        self._prompt_timer = QTimer(self)
        self._prompt_timer.setSingleShot(True)
        self._prompt_timer.setInterval(PROMPT_SAVE_DELAY_MS)
        self._prompt_timer.timeout.connect(self.save_system_prompt)
        self.system_prompt_edit.textChanged.connect(self._prompt_timer.start)

        self.sampling_combo = QComboBox(self)
        for preset in SAMPLING_PRESETS:
            self.sampling_combo.addItem(preset.label, preset.key)
        self.sampling_combo.setCurrentIndex(max(self.sampling_combo.findData(settings.sampling_preset), 0))
        self.sampling_hint = _hint(self)
        self._show_sampling_hint()
        self.sampling_combo.currentIndexChanged.connect(self._on_sampling)

        self.theme_combo = QComboBox(self)
        for key, label in THEME_CHOICES:
            self.theme_combo.addItem(label, key)
        self.theme_combo.setCurrentIndex(max(self.theme_combo.findData(settings.theme), 0))
        self.theme_combo.currentIndexChanged.connect(self._on_theme)

        self.menu_bar_only_check = QCheckBox("Show in the menu bar only", self)
        self.menu_bar_only_check.setChecked(settings.menu_bar_only)
        self.menu_bar_only_check.setEnabled(menu_bar_available)
        self.menu_bar_only_check.toggled.connect(self._on_menu_bar_only)
        self.menu_bar_only_hint = _hint(self)
        self.menu_bar_only_hint.setText(
            "No Dock icon; closing the window keeps Quick Ask in the menu bar."
            if menu_bar_available
            else "This desktop has no menu bar icon for Qwen Desk, so the Dock icon stays."
        )

        self.shortcut_edit = QKeySequenceEdit(self)
        self.shortcut_edit.setObjectName("ShortcutEdit")
        self.shortcut_edit.setMaximumSequenceLength(1)  # one combination: a global hot key
        self.shortcut_edit.setKeySequence(QKeySequence.fromString(settings.quick_ask_shortcut,
                                                                 QKeySequence.SequenceFormat.PortableText))
        self.shortcut_edit.editingFinished.connect(self._on_shortcut_recorded)
        self.shortcut_clear = QToolButton(self)
        self.shortcut_clear.setText("None")
        self.shortcut_clear.setToolTip("No global shortcut for Quick Ask")
        self.shortcut_clear.clicked.connect(self.clear_shortcut)
        self.shortcut_hint = _hint(self)
        self.shortcut_error = QLabel(self)
        self.shortcut_error.setObjectName("ErrorNote")
        self.shortcut_error.setWordWrap(True)
        self.shortcut_error.hide()
        self._shortcuts_supported = shortcuts_supported
        self._show_shortcut_hint()

        self._build_server_controls(server)
        self.prompt_cache = PromptCacheControls(settings, prompt_cache_dir(), self)
        self.prompt_cache.changed.connect(lambda: self.settingChanged.emit(PROMPT_CACHE_BUDGET))

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
        form.setHorizontalSpacing(14)
        form.setVerticalSpacing(6)
        form.addRow("System prompt:", self.system_prompt_edit)
        form.addRow("", _hint(self, "Instructions the model follows in every chat."))
        form.addItem(_gap())
        form.addRow("Sampling:", self.sampling_combo)
        form.addRow("", self.sampling_hint)
        form.addItem(_gap())
        form.addRow("Appearance:", self.theme_combo)
        form.addRow("", self.menu_bar_only_check)
        form.addRow("", self.menu_bar_only_hint)
        form.addItem(_gap())
        shortcut_row = QHBoxLayout()
        shortcut_row.setSpacing(6)
        shortcut_row.addWidget(self.shortcut_edit, 1)
        shortcut_row.addWidget(self.shortcut_clear)
        form.addRow("Quick Ask shortcut:", shortcut_row)
        form.addRow("", self.shortcut_hint)
        form.addRow("", self.shortcut_error)
        form.addItem(_gap())
        form.addRow("Local server:", self.server_check)
        port_row = QHBoxLayout()
        port_row.setSpacing(6)
        port_row.addWidget(self.server_port_spin)
        port_row.addWidget(self.server_url_label, 1)
        form.addRow("Port:", port_row)
        form.addRow("", self.server_network_check)
        key_row = QHBoxLayout()
        key_row.setSpacing(6)
        key_row.addWidget(self.server_key_edit, 1)
        key_row.addWidget(self.server_key_copy)
        self.server_key_label = QLabel("API key:", self)
        form.addRow(self.server_key_label, key_row)
        form.addRow("", self.server_hint)
        form.addRow("", self.server_status)
        form.addItem(_gap())
        form.addRow("Prompt cache on disk:", self.prompt_cache)
        form.addRow("", _hint(self, "Long chats reopen fast after a restart. A new limit applies when a model is next loaded."))
        self._show_server()
        from app.tools.service import ToolService
        from app.tools.settings_section import ToolsSection

        tools = getattr(parent, "tools", None)  # app.tools.turn.ChatTools, when attached
        self.tools_section = ToolsSection(settings, tools.service if tools is not None else ToolService(), self)
        self.tools_section.settingChanged.connect(self.settingChanged)
        if tools is not None:
            self.tools_section.permissionsChanged.connect(tools.broker.refresh_permissions)
        form.addItem(_gap())
        form.addRow("Tools:", self.tools_section)
        # The sections together are taller than a laptop screen: they scroll in one pane, as a
        # System Settings pane does, and the window is sized to fit the screen it opens on.
        content = QWidget(self)
        content.setObjectName("SettingsContent")
        inner = QVBoxLayout(content)
        inner.setContentsMargins(24, 20, 24, 20)
        inner.addLayout(form)
        inner.addStretch(1)
        self.scroll_area = _FocusScrollArea(self)
        self.scroll_area.setObjectName("SettingsScroll")
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(content)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll_area)
        self.setMinimumWidth(520)
        self.setMinimumHeight(MIN_HEIGHT)
        self._fit_to_screen(content)

    def _fit_to_screen(self, content: QWidget) -> None:
        """As tall as the sections need, but never taller than the screen's free area."""
        screen = (self.parentWidget().screen() if self.parentWidget() is not None else None) or QGuiApplication.primaryScreen()
        hint = content.sizeHint()
        width = max(self.minimumWidth(), hint.width() + self.scroll_area.verticalScrollBar().sizeHint().width())
        height = hint.height()
        if screen is not None:
            free = screen.availableGeometry()
            height = min(height, free.height() - SCREEN_MARGIN)
            width = min(width, free.width() - SCREEN_MARGIN)
        self.resize(width, max(height, MIN_HEIGHT))

    def reload_choices(self) -> None:
        """Show sampling and theme as the settings hold them (the menus change them too)."""
        for combo, value in ((self.sampling_combo, self._settings.sampling_preset),
                             (self.theme_combo, self._settings.theme)):
            combo.blockSignals(True)
            combo.setCurrentIndex(max(combo.findData(value), 0))
            combo.blockSignals(False)
        self._show_sampling_hint()
        for check, on in ((self.server_check, self._settings.server_enabled),
                          (self.server_network_check, self._settings.server_allow_network)):
            check.blockSignals(True)
            check.setChecked(on)
            check.blockSignals(False)
        self._show_server()

    # ------------------------------------------------------------------ values
    def focus_system_prompt(self) -> None:
        self.system_prompt_edit.setFocus(Qt.FocusReason.OtherFocusReason)
        self.system_prompt_edit.selectAll()

    def save_system_prompt(self) -> None:
        self._prompt_timer.stop()
        text = self.system_prompt_edit.toPlainText().strip()
        if text != self._settings.system_prompt:
            self._settings.system_prompt = text
            self.settingChanged.emit(SYSTEM_PROMPT)

    def _on_sampling(self, _index: int) -> None:
        self._settings.sampling_preset = self.sampling_combo.currentData()
        self._show_sampling_hint()
        self.settingChanged.emit(SAMPLING_PRESET)

    def _show_sampling_hint(self) -> None:
        key = self.sampling_combo.currentData()
        self.sampling_hint.setText(next((p.description for p in SAMPLING_PRESETS if p.key == key), ""))

    def _on_theme(self, _index: int) -> None:
        self._settings.theme = self.theme_combo.currentData()
        self.settingChanged.emit(THEME)

    def _on_menu_bar_only(self, on: bool) -> None:
        self._settings.menu_bar_only = on
        self.settingChanged.emit(MENU_BAR_ONLY)

    def set_shortcut(self, text: str) -> bool:
        """Keep ``text`` as the Quick Ask shortcut if it can be one; else show why. ("" = none.)"""
        text = text.strip()
        previous = self._settings.quick_ask_shortcut
        problem = ""
        if text:
            try:
                parse_shortcut(text)
            except ValueError as error:
                problem = str(error)
        if not problem and self._shortcut_applier is not None and text != previous:
            problem = self._shortcut_applier(text)
            if problem:
                self._shortcut_applier(previous)  # the old one is still what the settings say
        self.shortcut_error.setText(problem)
        self.shortcut_error.setVisible(bool(problem))
        if problem:
            self._show_sequence(previous)
            return False
        self._show_sequence(text)
        if text != previous:
            self._settings.quick_ask_shortcut = text
            self.settingChanged.emit(QUICK_ASK_SHORTCUT)
        self._show_shortcut_hint()
        return True

    def clear_shortcut(self) -> None:
        self.set_shortcut("")

    def _on_shortcut_recorded(self) -> None:
        self.set_shortcut(shortcut_text(self.shortcut_edit.keySequence()))

    def _show_sequence(self, text: str) -> None:
        self.shortcut_edit.blockSignals(True)
        self.shortcut_edit.setKeySequence(QKeySequence.fromString(text, QKeySequence.SequenceFormat.PortableText))
        self.shortcut_edit.blockSignals(False)

    def _show_shortcut_hint(self) -> None:
        if not self._shortcuts_supported:
            hint = "Global shortcuts work on macOS; this one is kept for when Qwen Desk runs there."
        elif self._settings.quick_ask_shortcut:
            hint = "Opens Quick Ask from any app. Click the field and press new keys to change it."
        else:
            hint = "Click the field and press keys (for example \u2325Space) to open Quick Ask from any app."
        self.shortcut_hint.setText(hint)

    # ------------------------------------------------------------ local server
    def _build_server_controls(self, server: Optional[object]) -> None:
        settings = self._settings
        self._server = server
        self.server_check = QCheckBox("Serve the loaded model to other apps", self)
        self.server_check.setChecked(settings.server_enabled)
        self.server_check.toggled.connect(self._on_server_enabled)
        self.server_port_spin = QSpinBox(self)
        self.server_port_spin.setRange(1024, 65535)
        self.server_port_spin.setValue(settings.server_port)
        self.server_port_spin.setKeyboardTracking(False)  # one restart when typing ends, not per digit
        self.server_port_spin.valueChanged.connect(self._on_server_port)
        self.server_url_label = QLabel(self)
        self.server_url_label.setObjectName("MutedLabel")
        self.server_url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.server_network_check = QCheckBox("Allow other devices on the network", self)
        self.server_network_check.setChecked(settings.server_allow_network)
        self.server_network_check.toggled.connect(self._on_server_network)
        self.server_key_edit = QLineEdit(self)
        self.server_key_edit.setObjectName("ServerKeyEdit")
        self.server_key_edit.setReadOnly(True)
        self.server_key_copy = QToolButton(self)
        self.server_key_copy.setText("Copy")
        self.server_key_copy.setToolTip("Copy the API key")
        self.server_key_copy.clicked.connect(self.copy_server_key)
        self.server_hint = _hint(self)
        self.server_status = QLabel(self)
        self.server_status.setWordWrap(True)
        if server is not None:
            server.stateChanged.connect(lambda _state: self._show_server())

    def copy_server_key(self) -> None:
        QGuiApplication.clipboard().setText(self._settings.server_api_key)

    def _on_server_enabled(self, on: bool) -> None:
        self._settings.server_enabled = on
        self._show_server()
        self.settingChanged.emit(SERVER_ENABLED)

    def _on_server_port(self, port: int) -> None:
        if port != self._settings.server_port:
            self._settings.server_port = port
            self._show_server()
            self.settingChanged.emit(SERVER_PORT)

    def _on_server_network(self, on: bool) -> None:
        self._settings.server_allow_network = on  # turning it on makes a key if there is none
        self._show_server()
        self.settingChanged.emit(SERVER_NETWORK)

    def _show_server(self) -> None:
        settings = self._settings
        network = settings.server_allow_network
        url = f"http://127.0.0.1:{settings.server_port}/v1"
        self.server_url_label.setText(url)
        for widget in (self.server_key_label, self.server_key_edit, self.server_key_copy):
            widget.setVisible(network)
        self.server_key_edit.setText(settings.server_api_key if network else "")
        if network:
            hint = ("Other devices reach it at this Mac\u2019s address on the same port, and must send "
                    "the API key (Authorization: Bearer \u2026). Requests wait their turn with your chats.")
        else:
            hint = (f"Apps on this Mac can use {url} as an OpenAI- or Anthropic-compatible endpoint. "
                    "It serves the model loaded here; requests wait their turn with your chats.")
        self.server_hint.setText(hint)
        state = getattr(self._server, "state", None)
        kind = getattr(state, "kind", "stopped")
        failed = kind == "failed"
        if failed:
            text = state.message
        elif kind == "listening":
            text = f"Listening on {state.network_url or state.url}"
        elif kind == "starting":
            text = "Starting\u2026"
        else:
            text = ""
        self.server_status.setObjectName("ErrorNote" if failed else "SettingsHint")
        self.server_status.style().unpolish(self.server_status)  # the object name picks the style
        self.server_status.style().polish(self.server_status)
        self.server_status.setText(text)
        self.server_status.setVisible(bool(text))

    # ------------------------------------------------------------------ closing
    def done(self, result: int) -> None:  # Esc, the close button: nothing typed is lost
        self.save_system_prompt()
        super().done(result)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        self.save_system_prompt()
        super().closeEvent(event)


class _FocusScrollArea(QScrollArea):
    """Tab and Shift+Tab bring the focused control into view, also when focus moves by a click
    on a label's buddy or by code (focus_system_prompt)."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        QApplication.instance().focusChanged.connect(self._on_focus)

    def _on_focus(self, _old: Optional[QWidget], new: Optional[QWidget]) -> None:
        content = self.widget()
        if new is not None and content is not None and content.isAncestorOf(new):
            self.ensureWidgetVisible(new, 16, 16)


def _hint(parent: QWidget, text: str = "") -> QLabel:
    label = QLabel(text, parent)
    label.setObjectName("SettingsHint")
    label.setWordWrap(True)
    return label


def _gap() -> QSpacerItem:
    return QSpacerItem(0, 10, QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
