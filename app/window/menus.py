"""The main window's menus and their actions (File, Edit, View, Model, Window, Help).

The actions are attributes here (``window.menus.stop_action``); what they do is the window's
public commands. Every action is also added to the window, so its shortcut works with the menu
bar hidden (Linux, tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QShortcut
from PySide6.QtWidgets import QApplication

from app.settings import SAMPLING_PRESETS

if TYPE_CHECKING:
    from app.window.main_window import MainWindow


class WindowMenus:
    def __init__(self, window: "MainWindow") -> None:
        self._window = window
        self._build(window)

    def add_reasoning_menu(self, menu) -> None:
        """The top bar's Effort / earlier-reasoning menu, in the menu bar too (keyboard, VoiceOver),
        after Think Before Answering; it shows only while the loaded model offers it."""
        menu.setTitle("Reasoning")
        self._model_menu.insertMenu(self._sampling_menu.menuAction(), menu)

    def _action(self, text: str, slot: Callable, shortcut=None, *, tip: str = "") -> QAction:
        action = QAction(text, self._window)
        if shortcut is not None:
            if isinstance(shortcut, (list, tuple)):
                action.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        self._window.addAction(action)  # shortcuts work even with the menu bar hidden (Linux, tests)
        return action

    def _build(self, window: "MainWindow") -> None:
        bar = window.menuBar()
        std = QKeySequence.StandardKey

        file_menu = bar.addMenu("&File")
        self.new_chat_action = self._action("New Chat", window.new_chat, std.New)
        file_menu.addAction(self.new_chat_action)
        self.open_action = self._action("Open\u2026", window.open_documents, std.Open,
                                        tip="Attach documents to the next message")
        file_menu.addAction(self.open_action)
        file_menu.addSeparator()
        self.export_action = self._action("Export Chat as Markdown\u2026", window.export_chat, "Ctrl+Shift+E")
        file_menu.addAction(self.export_action)
        self.export_reasoning_action = self._action("Include Reasoning in Exports", window.set_export_reasoning)
        self.export_reasoning_action.setCheckable(True)
        self.export_reasoning_action.setChecked(window.settings.export_reasoning)
        file_menu.addAction(self.export_reasoning_action)
        file_menu.addSeparator()
        self.close_action = self._action("Close Window", window.close, std.Close)
        file_menu.addAction(self.close_action)
        self.settings_action = self._action("Settings\u2026", window.open_preferences, preferences_keys())
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        file_menu.addAction(self.settings_action)
        self.quit_action = self._action("Quit Qwen Desk", QApplication.quit, std.Quit)
        self.quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        file_menu.addAction(self.quit_action)

        edit_menu = bar.addMenu("&Edit")
        for text, key, method in (
            ("Undo", std.Undo, "undo"),
            ("Redo", std.Redo, "redo"),
            (None, None, None),
            ("Cut", std.Cut, "cut"),
            ("Copy", std.Copy, "copy"),
            ("Paste", std.Paste, "paste"),
            ("Select All", std.SelectAll, "selectAll"),
        ):
            if text is None:
                edit_menu.addSeparator()
                continue
            action = QAction(text, self._window)
            action.setShortcut(QKeySequence(key))
            # Forward to whatever text widget has focus; the widget's own shortcut wins there.
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            action.triggered.connect(lambda _=False, m=method: _call_on_focus(m))
            edit_menu.addAction(action)
        edit_menu.addSeparator()
        self.copy_answer_action = self._action("Copy Last Answer", window.copy_last_answer, "Ctrl+Shift+C")
        edit_menu.addAction(self.copy_answer_action)
        self.find_action = self._action("Find Chat\u2026", window.sidebar.focus_search, std.Find)
        edit_menu.addAction(self.find_action)
        self.rename_action = self._action("Rename Chat\u2026", lambda: window.sidebar.begin_rename())
        edit_menu.addAction(self.rename_action)
        self.delete_action = self._action("Delete Chat\u2026", lambda: window.sidebar.delete())
        edit_menu.addAction(self.delete_action)

        view_menu = bar.addMenu("&View")
        self.toggle_sidebar_action = self._action("Show Sidebar", window.toggle_sidebar, "Ctrl+Alt+S")
        self.toggle_sidebar_action.setCheckable(True)
        self.toggle_sidebar_action.setChecked(True)
        view_menu.addAction(self.toggle_sidebar_action)
        appearance = view_menu.addMenu("Appearance")
        self.theme_group = QActionGroup(window)
        for key, label in (("system", "Use System Setting"), ("light", "Light"), ("dark", "Dark")):
            action = QAction(label, self.theme_group)
            action.setCheckable(True)
            action.setChecked(window.settings.theme == key)
            action.setData(key)
            appearance.addAction(action)
        self.theme_group.triggered.connect(window.choose_theme)

        model_menu = bar.addMenu("&Model")
        self.choose_model_action = self._action("Choose Model\u2026", window.focus_model_picker, "Ctrl+K")
        model_menu.addAction(self.choose_model_action)
        self.manage_models_action = self._action("Manage Models\u2026", window.open_model_manager, "Ctrl+Shift+M")
        model_menu.addAction(self.manage_models_action)
        self.eject_action = self._action("Eject Model", window.unload_model, "Ctrl+E",
                                         tip="Unload the model and free its memory")
        self.eject_action.setEnabled(False)  # while a model is loaded (MainWindow._model_state_changed)
        model_menu.addAction(self.eject_action)
        model_menu.addSeparator()
        self.thinking_action = self._action("Think Before Answering", window.follow_thinking_menu, "Ctrl+Shift+T")
        self.thinking_action.setCheckable(True)
        self.thinking_action.setChecked(window.settings.thinking_enabled)
        model_menu.addAction(self.thinking_action)
        sampling = model_menu.addMenu("Sampling")
        self._model_menu, self._sampling_menu = model_menu, sampling
        self.sampling_group = QActionGroup(window)
        for preset in SAMPLING_PRESETS:
            action = QAction(preset.label, self.sampling_group)
            action.setCheckable(True)
            action.setChecked(window.settings.sampling_preset == preset.key)
            action.setData(preset.key)
            action.setStatusTip(preset.description)
            sampling.addAction(action)
        self.sampling_group.triggered.connect(window.choose_sampling)
        self.system_prompt_action = self._action("System Prompt\u2026", window.edit_system_prompt)
        model_menu.addAction(self.system_prompt_action)
        self.chat_settings_action = self._action(
            "Chat Settings\u2026", window.open_chat_settings, "Ctrl+;",
            tip="This chat's system prompt, sampling, answer length and context")
        model_menu.addAction(self.chat_settings_action)
        self.server_action = self._action(
            "Local Server", window.follow_server_menu,
            tip="Serve the loaded model to other apps (OpenAI and Anthropic compatible)")
        self.server_action.setCheckable(True)
        self.server_action.setChecked(window.settings.server_enabled)
        self.server_action.setEnabled(False)  # until the app attaches its server (MainWindow.set_local_server)
        model_menu.addAction(self.server_action)
        model_menu.addSeparator()
        self.stop_action = self._action("Stop", window.stop, "Ctrl+.")
        self.stop_action.setEnabled(False)
        model_menu.addAction(self.stop_action)
        self.regenerate_action = self._action("Regenerate", window.regenerate_last, std.Refresh)
        model_menu.addAction(self.regenerate_action)

        window_menu = bar.addMenu("&Window")
        self.minimize_action = self._action("Minimize", window.showMinimized, "Ctrl+M")
        window_menu.addAction(self.minimize_action)
        window_menu.addAction(self._action("Zoom", window.toggle_zoom))
        window_menu.addSeparator()
        # Inside the app only; the system-wide shortcut is Quick Ask's own (Settings, macOS).
        self.quick_ask_action = self._action("Quick Ask", window.open_quick_ask, QUICK_ASK_KEYS,
                                             tip="Ask a quick question in a small popup")
        window_menu.addAction(self.quick_ask_action)
        window_menu.addSeparator()
        window_menu.addAction(self._action("Qwen Desk", window.bring_to_front))

        help_menu = bar.addMenu("&Help")
        about = self._action("About Qwen Desk", window.show_about)
        about.setMenuRole(QAction.MenuRole.AboutRole)
        help_menu.addAction(about)

        # Esc stops too, but only while an answer streams (it must not fight dialogs or edits).
        self.escape_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), window)
        self.escape_shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        self.escape_shortcut.activated.connect(window.stop)
        self.escape_shortcut.setEnabled(False)


QUICK_ASK_KEYS = "Ctrl+Shift+Space"  # Cmd+Shift+Space on a Mac


def preferences_keys() -> list[QKeySequence]:
    """The platform's Settings keys (Cmd+, on a Mac); Ctrl+, where the platform has none."""
    keys = QKeySequence.keyBindings(QKeySequence.StandardKey.Preferences)
    return keys or [QKeySequence("Ctrl+,")]


def _call_on_focus(method: str) -> None:
    widget = QApplication.focusWidget()
    target = getattr(widget, method, None)
    if callable(target):
        target()
