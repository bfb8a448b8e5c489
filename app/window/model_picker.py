"""The top bar's model picker: installed models, local folders, and "Manage Models…".

Listing the HF cache reads the disk, so it runs on a short background thread; the picker shows
what it last knew at once and fills in the fresh list when the scan arrives (GUI thread).
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QWidget

from app.models.installed import InstalledModel, installed_cache_models
from app.window.status_panel import display_name

log = logging.getLogger(__name__)
MANAGE_MODELS = "__manage__"


class ModelPicker(QComboBox):
    modelChosen = Signal(str)
    manageRequested = Signal()
    # (scan number, repo ids): emitted on the scanning thread, delivered queued on the GUI's.
    _scanned = Signal(int, list)

    def __init__(self, current: Callable[[], str], local_folders: Callable[[], list[str]], *,
                 scan: Callable[[], list[InstalledModel]] = installed_cache_models,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelPicker")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.setToolTip("Model (\u2318K)")
        self.setMinimumContentsLength(18)
        self._current = current
        self._local_folders = local_folders
        self._scan = scan
        self._cached: list[str] = []
        self._scans = 0
        self._scanned.connect(self._on_scanned)
        self.activated.connect(self._on_activated)

    def refresh(self) -> None:
        """Show the current choices now and re-read the cache in the background."""
        self._fill()
        self._scans += 1
        threading.Thread(target=self._run_scan, args=(self._scans,), name="model-scan", daemon=True).start()

    def _run_scan(self, number: int) -> None:
        """Background thread: no widget touched here, only the signal emitted."""
        try:
            keys = [model.key for model in self._scan()]
        except Exception:  # noqa: BLE001 - an unreadable cache still leaves a usable picker
            log.warning("could not list the cached models", exc_info=True)
            keys = []
        self._scanned.emit(number, keys)

    def _on_scanned(self, number: int, keys: list) -> None:
        if number == self._scans:  # an older scan's answer is stale
            self._cached = list(keys)
            self._fill()

    def _fill(self) -> None:
        current = self._current()
        keys = self._cached + [folder for folder in self._local_folders() if folder not in self._cached]
        if current and current not in keys:
            keys.insert(0, current)
        self.blockSignals(True)
        self.clear()
        if not keys:
            self.addItem("Choose a Model", "")
        for key in keys:
            self.addItem(display_name(key), key)
            self.setItemData(self.count() - 1, key, Qt.ItemDataRole.ToolTipRole)
        self.insertSeparator(self.count())
        self.addItem("Manage Models\u2026", MANAGE_MODELS)
        index = self.findData(current) if current else 0
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        key = self.itemData(index)
        if key == MANAGE_MODELS:
            self._fill()  # put the shown choice back
            self.manageRequested.emit()
        elif key:
            self.modelChosen.emit(key)
