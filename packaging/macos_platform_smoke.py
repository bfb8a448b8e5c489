"""Exercise the macOS-only calls of app/tray.py on a real Mac (the macOS workflow runs this).

Linux CI can only check that these calls decline cleanly; this checks that they work:
the Dock icon can be hidden and shown again, and a global shortcut registers, unregisters
and registers again. Exit status 0 means all of that held.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    if sys.platform != "darwin":
        print("macos_platform_smoke: macOS only", file=sys.stderr)
        return 2
    from PySide6.QtWidgets import QApplication

    from app.quick_ask.tray import GlobalShortcut, set_dock_icon_visible

    app = QApplication(sys.argv[:1])  # noqa: F841 (NSApplication exists from here on)
    failures = []
    if not set_dock_icon_visible(False):
        failures.append("hiding the Dock icon (Accessory policy) failed")
    if not set_dock_icon_visible(True):
        failures.append("showing the Dock icon (Regular policy) failed")

    first, second = GlobalShortcut(), GlobalShortcut()
    combination = "Ctrl+Alt+Shift+F12"  # unlikely to be taken on a CI runner
    if not first.register(combination):
        failures.append(f"registering {combination} failed: {first.error}")
    else:
        # Informational: whether Carbon refuses a duplicate from the same process is not
        # documented (another app's clash is what users meet); print what happened.
        clash = second.register(combination)
        print(f"duplicate registration in-process: {'accepted' if clash else 'refused: ' + second.error}")
        second.unregister()
    first.unregister()
    if first.is_registered():
        failures.append("unregister left the shortcut registered")
    if not second.register(combination):  # free again after unregister
        failures.append(f"re-registering after unregister failed: {second.error}")
    second.unregister()

    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("macOS platform calls: ok" if not failures else f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
