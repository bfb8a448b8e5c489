"""The top bar's model picker: installed models, local folders, Eject, and "Manage Models…".

It shows the truth about the worker: the loaded model (with a check mark), "Loading …" while a
load runs, and "No Model Loaded" otherwise; never a model that is only remembered or chosen.

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
EJECT_MODEL = "__eject__"
NO_MODEL = "No Model Loaded"
CHECK = "\u2713 "  # the loaded model's mark
UNCHECKED = "\u2003 "  # an em space keeps the names aligned under the mark


class ModelPicker(QComboBox):
    modelChosen = Signal(str)
    manageRequested = Signal()
    ejectRequested = Signal()
    # (scan number, repo ids): emitted on the scanning thread, delivered queued on the GUI's.
    _scanned = Signal(int, list)

    def __init__(self, current: Callable[[], str], local_folders: Callable[[], list[str]], *,
                 loading: Callable[[], str] = lambda: "",
                 scan: Callable[[], list[InstalledModel]] = installed_cache_models,
                 parent: Optional[QWidget] = None) -> None:
        """``current``: the loaded model's key ("" for none); ``loading``: the one loading now."""
        super().__init__(parent)
        self.setObjectName("ModelPicker")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.setToolTip("Model (\u2318K)")
        self.setMinimumContentsLength(18)
        self._current = current
        self._loading = loading
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

    @property
    def loaded_key(self) -> str:
        return self._current()

    def _fill(self) -> None:
        loaded, loading = self._current(), self._loading()
        keys = self._cached + [folder for folder in self._local_folders() if folder not in self._cached]
        if loaded and loaded not in keys:
            keys.insert(0, loaded)
        self.blockSignals(True)
        self.clear()
        if loading:
            self.addItem(f"Loading {display_name(loading)}\u2026", "")
            self.setItemData(0, loading, Qt.ItemDataRole.ToolTipRole)
        elif not loaded:
            self.addItem(NO_MODEL, "")
            self.setItemData(0, "Choose a model to chat with", Qt.ItemDataRole.ToolTipRole)
        for key in keys:
            self.addItem((CHECK if key == loaded and not loading else UNCHECKED) + display_name(key), key)
            self.setItemData(self.count() - 1, key, Qt.ItemDataRole.ToolTipRole)
        self.insertSeparator(self.count())
        if loaded and not loading:
            self.addItem(f"Eject {display_name(loaded)}", EJECT_MODEL)
            self.setItemData(self.count() - 1, "Free its memory (\u2318E)", Qt.ItemDataRole.ToolTipRole)
        self.addItem("Manage Models\u2026", MANAGE_MODELS)
        index = 0 if loading or not loaded else self.findData(loaded)
        self.setCurrentIndex(max(index, 0))
        self.blockSignals(False)

    def _on_activated(self, index: int) -> None:
        key = self.itemData(index)
        if key in (MANAGE_MODELS, EJECT_MODEL):
            self._fill()  # put the shown choice back
            (self.manageRequested if key == MANAGE_MODELS else self.ejectRequested).emit()
        elif key:
            self.modelChosen.emit(key)
