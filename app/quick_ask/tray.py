"""The thin platform layer of the menu-bar quick ask: tray icon, Dock visibility, icons.

Everything here either needs a real desktop (a system tray host, macOS's NSApplication) or
is a one-line Qt call, so it stays small and the testable part lives in ``quick_ask``.
Platform calls are guarded: on Linux (CI) they report "not available" instead of failing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

log = logging.getLogger(__name__)

IS_MAC = sys.platform == "darwin"


def resources_dir() -> Path:
    """The icons: ``app/resources`` where they ship as package data (an installed wheel, the
    PyInstaller bundle), else the checkout's top-level ``resources/`` (their source; a checkout
    run or an editable install)."""
    app_package = Path(__file__).resolve().parents[1]
    shipped = app_package / "resources"
    return shipped if shipped.is_dir() else app_package.parent / "resources"


def app_icon() -> QIcon:
    """The app icon at every size we ship (window title bars, the Dock outside a bundle)."""
    icon = QIcon()
    for png in sorted((resources_dir() / "icons").glob("icon_*.png")):
        icon.addFile(str(png))
    return icon


def menu_bar_icon() -> QIcon:
    """A monochrome template image: macOS tints it to match a light or dark menu bar."""
    icon = QIcon(str(resources_dir() / "tray.svg"))
    icon.setIsMask(True)
    return icon


class MenuBarIcon(QObject):
    """The menu-bar (system tray) icon: a click toggles the popup, a menu offers the rest."""

    clicked = Signal()
    show_main_window = Signal()
    quit_requested = Signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._tray = QSystemTrayIcon(menu_bar_icon(), self)
        self._tray.setToolTip("Qwen Desk: Quick Ask")
        self._menu = QMenu()
        ask = QAction("Quick Ask", self._menu)
        ask.triggered.connect(self.clicked)
        window = QAction("Open Qwen Desk", self._menu)
        window.triggered.connect(self.show_main_window)
        quit_action = QAction("Quit Qwen Desk", self._menu)
        quit_action.triggered.connect(self.quit_requested)
        self._menu.addActions([ask, window])
        self._menu.addSeparator()
        self._menu.addAction(quit_action)
        # The menu opens on right-click (or ctrl-click); a plain click is the quick ask.
        self._tray.setContextMenu(self._menu)
        self._tray.activated.connect(self._on_activated)

    @staticmethod
    def available() -> bool:
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        self._tray.show()

    def hide(self) -> None:
        self._tray.hide()

    def geometry(self) -> QRect:
        """Where the icon is on screen (an empty rect where the platform does not say)."""
        return self._tray.geometry()

    def _on_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.clicked.emit()


# --- macOS: Dock icon on/off -------------------------------------------------------------------
#
# "Menu bar only" is NSApplication's Accessory activation policy (what LSUIElement=1 in
# Info.plist gives at launch), switched at run time so it can be a setting. The call goes
# through the Objective-C runtime with ctypes: no PyObjC dependency for two messages.

_NS_ACTIVATION_POLICY_REGULAR = 0
_NS_ACTIVATION_POLICY_ACCESSORY = 1


def set_dock_icon_visible(visible: bool) -> bool:
    """Show or hide the Dock icon (macOS). Returns False where that is not possible."""
    if not IS_MAC:
        return False
    try:
        objc = ctypes.cdll.LoadLibrary(ctypes.util.find_library("objc"))
        ctypes.cdll.LoadLibrary(ctypes.util.find_library("AppKit"))  # registers NSApplication
        objc.objc_getClass.restype = ctypes.c_void_p
        objc.objc_getClass.argtypes = [ctypes.c_char_p]
        objc.sel_registerName.restype = ctypes.c_void_p
        objc.sel_registerName.argtypes = [ctypes.c_char_p]
        # objc_msgSend must be typed per call shape (arm64 does not allow variadic calls).
        send_id = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            ("objc_msgSend", objc)
        )
        send_long = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long)(
            ("objc_msgSend", objc)
        )
        send_bool = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_bool)(
            ("objc_msgSend", objc)
        )
        ns_app = send_id(objc.objc_getClass(b"NSApplication"), objc.sel_registerName(b"sharedApplication"))
        if not ns_app:
            return False
        policy = _NS_ACTIVATION_POLICY_REGULAR if visible else _NS_ACTIVATION_POLICY_ACCESSORY
        changed = send_long(ns_app, objc.sel_registerName(b"setActivationPolicy:"), policy)
        if visible:
            # A Regular app coming back from Accessory must be activated, or its menu bar
            # stays the previous app's until the user clicks a window.
            send_bool(ns_app, objc.sel_registerName(b"activateIgnoringOtherApps:"), True)
        return bool(changed)
    except (OSError, AttributeError, TypeError):
        log.warning("could not change the Dock icon's visibility", exc_info=True)
        return False


# --- macOS: global shortcut ----------------------------------------------------------------------
#
# Carbon's RegisterEventHotKey: still the system's supported way to own a key combination
# app-wide without the Accessibility permission that event taps (pynput & co.) require, and
# what Qt-based apps use (QHotkey). Its events reach us through the main run loop, which Qt's
# Cocoa event dispatcher runs, so the handler fires on the GUI thread.

_CARBON_MODIFIERS = {  # Qt's Ctrl is the Command key on macOS, Meta is Control
    "cmd": 1 << 8,
    "shift": 1 << 9,
    "option": 1 << 11,
    "control": 1 << 12,
}
# macOS virtual key codes (ANSI layout positions; HIToolbox/Events.h kVK_*).
_MAC_KEY_CODES = {
    **dict(zip("ASDFHGZXCV", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9))),
    **dict(zip("BQWERYT", (11, 12, 13, 14, 15, 16, 17))),
    **dict(zip("123465", (18, 19, 20, 21, 22, 23))),
    **dict(zip("97", (25, 26))), "8": 28, "0": 29,
    **dict(zip("OUIP", (31, 32, 34, 35))), "L": 37, "J": 38, "K": 40,
    "N": 45, "M": 46,
    "SPACE": 49, "RETURN": 36, "TAB": 48,
    **{f"F{n}": code for n, code in zip(
        range(1, 13), (122, 120, 99, 118, 96, 97, 98, 100, 101, 109, 103, 111)
    )},
}
_K_EVENT_CLASS_KEYBOARD = int.from_bytes(b"keyb", "big")
_K_EVENT_HOTKEY_PRESSED = 5
_HOTKEY_SIGNATURE = int.from_bytes(b"QwDk", "big")
_EVENT_HOTKEY_EXISTS_ERR = -9878


@dataclass(frozen=True)
class MacHotKey:
    """A key combination in Carbon's terms."""

    key_code: int
    modifiers: int


def parse_shortcut(text: str) -> MacHotKey:
    """"Alt+Space" (Qt's portable text, as QKeySequence writes it) -> Carbon key code/modifiers.

    Raises ValueError with a plain sentence for anything a global shortcut cannot be.
    """
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QKeySequence

    sequence = QKeySequence.fromString(text.strip(), QKeySequence.SequenceFormat.PortableText)
    if sequence.count() != 1:
        raise ValueError(f"{text!r} is not a single key combination (for example Alt+Space).")
    combination = sequence[0]
    qt_modifiers = combination.keyboardModifiers()
    modifiers = 0
    for qt_flag, carbon in (
        (Qt.KeyboardModifier.ControlModifier, "cmd"),
        (Qt.KeyboardModifier.MetaModifier, "control"),
        (Qt.KeyboardModifier.AltModifier, "option"),
        (Qt.KeyboardModifier.ShiftModifier, "shift"),
    ):
        if qt_modifiers & qt_flag:
            modifiers |= _CARBON_MODIFIERS[carbon]
    key_name = QKeySequence(combination.key()).toString(QKeySequence.SequenceFormat.PortableText).upper()
    if key_name not in _MAC_KEY_CODES:
        raise ValueError(f"{key_name or text!r} cannot be used in a global shortcut; use a letter, "
                         "a digit, Space, Return, Tab or F1-F12.")
    is_function_key = key_name.startswith("F") and key_name[1:].isdigit()
    if not modifiers & ~_CARBON_MODIFIERS["shift"] and not is_function_key:
        raise ValueError(f"{text!r} needs Command, Option or Control, or every press of that key "
                         "in every app would open Quick Ask.")
    return MacHotKey(_MAC_KEY_CODES[key_name], modifiers)


class _EventHotKeyID(ctypes.Structure):
    _fields_ = [("signature", ctypes.c_uint32), ("id", ctypes.c_uint32)]


class _EventTypeSpec(ctypes.Structure):
    _fields_ = [("eventClass", ctypes.c_uint32), ("eventKind", ctypes.c_uint32)]


_EventHandlerProc = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class GlobalShortcut(QObject):
    """A system-wide key combination that emits ``activated`` (macOS; elsewhere unavailable).

    Off unless the user picks a shortcut in the settings: ``register("Alt+Space")``.
    """

    activated = Signal()

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.error = ""  # why the last register() failed, fit to show the user
        self._carbon: Any = None
        self._hotkey_ref = ctypes.c_void_p()
        self._handler_ref = ctypes.c_void_p()
        self._handler = _EventHandlerProc(self._on_hotkey)  # kept alive as long as we are

    @staticmethod
    def supported() -> bool:
        return IS_MAC

    def is_registered(self) -> bool:
        return bool(self._hotkey_ref.value)

    def register(self, shortcut: str) -> bool:
        """Own ``shortcut`` system-wide (replacing any earlier one). False with ``error`` set if not."""
        self.unregister()
        self.error = ""
        try:
            hotkey = parse_shortcut(shortcut)
        except ValueError as problem:
            self.error = str(problem)
            return False
        if not IS_MAC:
            self.error = "Global shortcuts are available on macOS only."
            return False
        try:
            carbon = self._load_carbon()
            target = carbon.GetApplicationEventTarget()
            if not self._handler_ref.value:
                spec = _EventTypeSpec(_K_EVENT_CLASS_KEYBOARD, _K_EVENT_HOTKEY_PRESSED)
                status = carbon.InstallEventHandler(
                    target, self._handler, 1, ctypes.byref(spec), None, ctypes.byref(self._handler_ref)
                )
                if status != 0:
                    self.error = f"macOS refused the shortcut handler (error {status})."
                    return False
            status = carbon.RegisterEventHotKey(
                hotkey.key_code, hotkey.modifiers, _EventHotKeyID(_HOTKEY_SIGNATURE, 1), target, 0,
                ctypes.byref(self._hotkey_ref),
            )
        except (OSError, AttributeError) as problem:
            log.warning("global shortcut unavailable", exc_info=True)
            self.error = f"Global shortcuts are unavailable here ({problem})."
            return False
        if status == _EVENT_HOTKEY_EXISTS_ERR:
            self.error = f"{shortcut} is already used by another app; choose another shortcut."
        elif status != 0:
            self.error = f"macOS refused {shortcut} (error {status})."
        return status == 0

    def unregister(self) -> None:
        if self._carbon is not None and self._hotkey_ref.value:
            self._carbon.UnregisterEventHotKey(self._hotkey_ref)
        self._hotkey_ref = ctypes.c_void_p()

    def _load_carbon(self) -> Any:
        if self._carbon is None:
            carbon = ctypes.cdll.LoadLibrary(ctypes.util.find_library("Carbon"))
            carbon.GetApplicationEventTarget.restype = ctypes.c_void_p
            carbon.GetApplicationEventTarget.argtypes = []
            carbon.InstallEventHandler.restype = ctypes.c_int32
            carbon.InstallEventHandler.argtypes = [
                ctypes.c_void_p, _EventHandlerProc, ctypes.c_ulong, ctypes.POINTER(_EventTypeSpec),
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
            ]
            carbon.RegisterEventHotKey.restype = ctypes.c_int32
            carbon.RegisterEventHotKey.argtypes = [
                ctypes.c_uint32, ctypes.c_uint32, _EventHotKeyID, ctypes.c_void_p, ctypes.c_uint32,
                ctypes.POINTER(ctypes.c_void_p),
            ]
            carbon.UnregisterEventHotKey.restype = ctypes.c_int32
            carbon.UnregisterEventHotKey.argtypes = [ctypes.c_void_p]
            self._carbon = carbon
        return self._carbon

    def _on_hotkey(self, _call_ref: Any, _event: Any, _user_data: Any) -> int:
        # Only our one hot key is registered with this handler.
        self.activated.emit()
        return 0
