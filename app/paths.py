"""Where the app keeps its files: the platform's app-data folder, or QWEN_DESK_DATA_DIR.

macOS: ~/Library/Application Support/Qwen Desk. Tests and portable setups point
QWEN_DESK_DATA_DIR elsewhere so they never touch a real user's conversations or settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QStandardPaths

DATA_DIR_ENV = "QWEN_DESK_DATA_DIR"
APP_NAME = "Qwen Desk"
ORGANIZATION_NAME = "Qwen Desk"
ORGANIZATION_DOMAIN = "qwendesk.app"


def data_dir() -> Path:
    """The folder for the conversation database and (under an override) the settings file."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        # Without a QApplication name Qt returns a generic folder; never share it with other apps.
        path = Path(location) if location and APP_NAME in location else Path.home() / ".qwen-desk"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Regenerable data (prompt caches): macOS ~/Library/Caches/Qwen Desk, which Time Machine
    skips; under QWEN_DESK_DATA_DIR a "cache" folder inside it."""
    if os.environ.get(DATA_DIR_ENV):
        path = data_dir() / "cache"
    else:
        location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.CacheLocation)
        path = Path(location) if location and APP_NAME in location else data_dir() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def prompt_cache_dir() -> Path:
    """Where conversations' prompt caches are kept between launches."""
    return cache_dir() / "prompt-cache"


def settings_file_override() -> Path | None:
    """An INI file beside the data when QWEN_DESK_DATA_DIR is set; None means native QSettings."""
    if os.environ.get(DATA_DIR_ENV):
        return data_dir() / "settings.ini"
    return None
