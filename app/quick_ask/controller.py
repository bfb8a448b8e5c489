"""Quick Ask's entry points: the menu-bar icon, the global shortcut, and the popup they toggle."""

from __future__ import annotations

import time
from typing import Callable, Optional

from PySide6.QtCore import QObject, QRect, Signal

from app.quick_ask.popup import QuickAskOptions, QuickAskPopup
from app.quick_ask.tray import GlobalShortcut, MenuBarIcon
from app.worker.protocols import JobRunner

# See QuickAskController.toggle.
REOPEN_GUARD_S = 0.3


class QuickAskController(QObject):
    """Owns the popup and, where the desktop has one, the menu-bar icon that opens it.

    app/gui.py::

        quick_ask = QuickAskController(worker_client, options_provider=..., parent=window)
        quick_ask.open_in_main_window.connect(window.start_chat_from_quick_ask)
        quick_ask.show_main_window.connect(window.bring_to_front)
        quick_ask.quit_requested.connect(app.quit)
        error = quick_ask.set_global_shortcut(settings_shortcut)  # "" = off; macOS only
    """

    open_in_main_window = Signal(str, str, str)  # question, answer, "complete" | "stopped"
    show_main_window = Signal()
    quit_requested = Signal()

    def __init__(
        self,
        worker: JobRunner,
        *,
        options_provider: Optional[Callable[[], QuickAskOptions]] = None,
        use_menu_bar_icon: bool = True,
        parent: Optional[QObject] = None,
    ) -> None:
        super().__init__(parent)
        self.popup = QuickAskPopup(worker, options_provider=options_provider)
        self.popup.open_in_main_window.connect(self.open_in_main_window)
        self.popup.closed.connect(self._note_closed)
        self._closed_at = float("-inf")
        self.menu_bar_icon: Optional[MenuBarIcon] = None
        if use_menu_bar_icon and MenuBarIcon.available():
            self.menu_bar_icon = MenuBarIcon(self)
            self.menu_bar_icon.clicked.connect(self.toggle)
            self.menu_bar_icon.show_main_window.connect(self.show_main_window)
            self.menu_bar_icon.quit_requested.connect(self.quit_requested)
            self.menu_bar_icon.show()
        self.global_shortcut = GlobalShortcut(self)
        self.global_shortcut.activated.connect(self.toggle)

    def set_global_shortcut(self, shortcut: str) -> str:
        """Own ``shortcut`` (e.g. "Alt+Space") system-wide, or none for "". Returns an error or ""."""
        if not shortcut.strip():
            self.global_shortcut.unregister()
            return ""
        return "" if self.global_shortcut.register(shortcut) else self.global_shortcut.error

    def has_menu_bar_icon(self) -> bool:
        return self.menu_bar_icon is not None

    def show_popup(self) -> None:
        anchor = self.menu_bar_icon.geometry() if self.menu_bar_icon else QRect()
        self.popup.popup_at(anchor)

    def toggle(self) -> None:
        # A click on the icon while the popup is open first closes the popup (Qt.Popup closes
        # on any outside press), then arrives here: that click meant "close", not "reopen".
        if self.popup.isVisible() or time.monotonic() - self._closed_at < REOPEN_GUARD_S:
            self.popup.close()
            return
        self.show_popup()

    def shutdown(self) -> None:
        self.global_shortcut.unregister()
        self.popup.close()
        if self.menu_bar_icon is not None:
            self.menu_bar_icon.hide()
        self.popup.deleteLater()

    def _note_closed(self) -> None:
        self._closed_at = time.monotonic()
