"""The Settings window (Cmd+,) and what its settings do: theme, sampling, system prompt, the
Quick Ask shortcut, and "menu bar only" (no Dock icon, the app outlives its window)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence

from app import gui
from app.quick_ask import tray
from app.window.main_window import MainWindow
from app.window.preferences import MENU_BAR_ONLY, QUICK_ASK_SHORTCUT, SAMPLING_PRESET, THEME, PreferencesDialog
from app.settings import Settings
from app.chat.store import ConversationStore
from app.worker.worker import WorkerClient


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def dialog(qtbot, settings: Settings):
    def make(**kwargs) -> PreferencesDialog:
        widget = PreferencesDialog(settings, **kwargs)
        qtbot.addWidget(widget)
        changed: list[str] = []
        widget.settingChanged.connect(changed.append)
        widget.changed = changed  # type: ignore[attr-defined]
        return widget

    return make


def test_menu_bar_only_is_off_by_default_and_persists(tmp_path: Path, settings: Settings) -> None:
    assert settings.menu_bar_only is False
    settings.menu_bar_only = True
    settings.sync()
    reopened = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert reopened.menu_bar_only is True


def test_choices_apply_at_once_and_say_what_changed(dialog, settings: Settings) -> None:
    prefs = dialog(menu_bar_available=True)
    prefs.theme_combo.setCurrentIndex(prefs.theme_combo.findData("dark"))
    prefs.sampling_combo.setCurrentIndex(prefs.sampling_combo.findData("creative"))
    prefs.menu_bar_only_check.setChecked(True)
    assert (settings.theme, settings.sampling_preset, settings.menu_bar_only) == ("dark", "creative", True)
    assert prefs.changed == [THEME, SAMPLING_PRESET, MENU_BAR_ONLY]
    assert "varied" in prefs.sampling_hint.text()  # the chosen preset's description


def test_system_prompt_is_kept_when_the_window_closes(dialog, settings: Settings) -> None:
    prefs = dialog()
    prefs.show()
    prefs.system_prompt_edit.setPlainText("  Answer in French.  ")
    assert settings.system_prompt == ""  # saved after a pause in typing, or on close
    prefs.reject()  # Esc
    assert settings.system_prompt == "Answer in French."
    assert prefs.changed == ["system_prompt"]


def test_menu_bar_only_is_offered_only_with_a_menu_bar_icon(dialog) -> None:
    assert not dialog(menu_bar_available=False).menu_bar_only_check.isEnabled()
    assert dialog(menu_bar_available=True).menu_bar_only_check.isEnabled()


def test_a_shortcut_that_cannot_be_global_is_refused_with_the_reason(dialog, settings: Settings) -> None:
    applied: list[str] = []
    prefs = dialog(shortcuts_supported=True, shortcut_applier=lambda s: applied.append(s) or "")
    assert not prefs.set_shortcut("Space")  # every press of Space in every app would open it
    assert "Command, Option or Control" in prefs.shortcut_error.text()
    assert not prefs.shortcut_error.isHidden()
    assert settings.quick_ask_shortcut == "Alt+Space" and applied == [] and prefs.changed == []

    assert prefs.set_shortcut("Ctrl+Alt+K")
    assert settings.quick_ask_shortcut == "Ctrl+Alt+K" and applied == ["Ctrl+Alt+K"]
    assert prefs.shortcut_error.isHidden() and prefs.changed == [QUICK_ASK_SHORTCUT]
    assert prefs.shortcut_edit.keySequence() == QKeySequence("Ctrl+Alt+K")

    prefs.clear_shortcut()
    assert settings.quick_ask_shortcut == "" and applied[-1] == ""
    assert prefs.shortcut_edit.keySequence().isEmpty()


def test_a_shortcut_another_app_owns_leaves_the_previous_one_in_place(dialog, settings: Settings) -> None:
    applied: list[str] = []

    def applier(shortcut: str) -> str:
        applied.append(shortcut)
        return "Ctrl+Space is already used by another app; choose another shortcut." if shortcut == "Ctrl+Space" else ""

    prefs = dialog(shortcuts_supported=True, shortcut_applier=applier)
    assert not prefs.set_shortcut("Ctrl+Space")
    assert "already used" in prefs.shortcut_error.text()
    assert applied == ["Ctrl+Space", "Alt+Space"]  # the previous shortcut is registered again
    assert settings.quick_ask_shortcut == "Alt+Space"
    assert prefs.shortcut_edit.keySequence() == QKeySequence.fromString("Alt+Space", QKeySequence.SequenceFormat.PortableText)


def test_cmd_comma_opens_settings_and_the_menus_follow_its_changes(qtbot, tmp_path: Path, settings: Settings) -> None:
    settings.system_prompt = "Be brief."
    store = ConversationStore(tmp_path / "chats.db")
    worker = WorkerClient(engine_loader=lambda path, progress: None)
    window = MainWindow(store, worker, settings)
    qtbot.addWidget(window)
    try:
        action = window.menus.settings_action
        # The platform's Settings key (Cmd+, on a Mac); Ctrl+, where the platform names none.
        platform = QKeySequence.keyBindings(QKeySequence.StandardKey.Preferences)
        assert action.shortcuts() == (platform or [QKeySequence("Ctrl+,")])
        assert action.menuRole() == QAction.MenuRole.PreferencesRole  # the app menu on macOS
        seen: list[str] = []
        window.preferencesChanged.connect(seen.append)
        action.trigger()
        prefs = window.open_preferences()
        assert prefs.isVisible() and window.open_preferences() is prefs  # one window, raised
        prefs.sampling_combo.setCurrentIndex(prefs.sampling_combo.findData("precise"))
        prefs.theme_combo.setCurrentIndex(prefs.theme_combo.findData("light"))
        checked = {a.data() for a in window.menus.sampling_group.actions() + window.menus.theme_group.actions() if a.isChecked()}
        assert checked == {"precise", "light"} and seen == [SAMPLING_PRESET, THEME]

        # And the other way: a menu choice shows in the open Settings window.
        dark = next(a for a in window.menus.theme_group.actions() if a.data() == "dark")
        dark.trigger()
        assert prefs.theme_combo.currentData() == "dark" and settings.theme == "dark"

        # Model > System Prompt... opens the same window with the prompt selected for editing.
        window.menus.system_prompt_action.trigger()
        assert window.open_preferences() is prefs
        assert prefs.system_prompt_edit.textCursor().selectedText() == "Be brief."
        prefs.close()
    finally:
        worker.shutdown()
        store.close()


class FakeQuickAsk:
    def __init__(self, has_icon: bool) -> None:
        self._has_icon = has_icon

    def has_menu_bar_icon(self) -> bool:
        return self._has_icon


def test_menu_bar_only_hides_the_dock_icon_and_keeps_the_app_running(qapp, settings: Settings, monkeypatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(tray, "set_dock_icon_visible", lambda visible: calls.append(visible) or True)
    was_quitting = qapp.quitOnLastWindowClosed()
    try:
        # Off at launch: the Dock icon is simply left alone.
        assert gui.apply_menu_bar_only(qapp, settings, FakeQuickAsk(True), at_start=True) is False
        assert calls == [] and qapp.quitOnLastWindowClosed()

        settings.menu_bar_only = True
        assert gui.apply_menu_bar_only(qapp, settings, FakeQuickAsk(True)) is True
        assert calls == [False] and not qapp.quitOnLastWindowClosed()

        settings.menu_bar_only = False  # switched back off in Settings: the Dock icon returns
        assert gui.apply_menu_bar_only(qapp, settings, FakeQuickAsk(True)) is False
        assert calls == [False, True] and qapp.quitOnLastWindowClosed()

        # No menu-bar icon (or no Quick Ask): the setting can't strand the app without a way back.
        settings.menu_bar_only = True
        for quick_ask in (FakeQuickAsk(False), None):
            calls.clear()
            assert gui.apply_menu_bar_only(qapp, settings, quick_ask, at_start=True) is False
            assert calls == [] and qapp.quitOnLastWindowClosed()
    finally:
        qapp.setQuitOnLastWindowClosed(was_quitting)


def test_the_window_fits_the_screen_and_tab_brings_each_control_into_view(qtbot, dialog, monkeypatch) -> None:
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    # A 1440x900 laptop screen less the menu bar: the sections together are taller than that.
    screen = QGuiApplication.primaryScreen()
    monkeypatch.setattr(type(screen), "availableGeometry", lambda _self: QRect(0, 25, 1440, 875))
    prefs = dialog(menu_bar_available=True, shortcuts_supported=True)
    prefs.show()
    prefs.activateWindow()
    qtbot.waitActive(prefs)
    content = prefs.scroll_area.widget()
    assert content.sizeHint().height() > 875 - 80  # (else there is nothing to prove)
    assert prefs.height() <= 875 - 80 and prefs.scroll_area.verticalScrollBar().maximum() > 0

    # Every control is still reached with the keyboard, and scrolled into view when it is.
    prefs.system_prompt_edit.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is prefs.system_prompt_edit, timeout=2000)
    viewport = prefs.scroll_area.viewport()
    reached = []
    for _ in range(60):
        focused = QApplication.focusWidget()
        if focused is None or not content.isAncestorOf(focused):
            break
        if focused in reached:
            break  # round the whole window once
        reached.append(focused)
        top_left = focused.mapTo(viewport, QPoint(0, 0))
        assert viewport.rect().intersects(QRect(top_left, focused.size())), f"{focused.objectName() or focused} is out of view"
        qtbot.keyClick(focused, Qt.Key.Key_Tab)
    for control in (prefs.system_prompt_edit, prefs.sampling_combo, prefs.theme_combo, prefs.server_check,
                    prefs.server_port_spin):
        assert control in reached or any(control.isAncestorOf(w) for w in reached)
    assert prefs.scroll_area.verticalScrollBar().value() > 0  # it scrolled to reach the lower ones
