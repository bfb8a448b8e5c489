"""Settings' "Prompt cache on disk" line: the space it takes, a Clear button, its size budget.

Reopening a long chat after a restart is fast because its prompt cache was kept on disk
(``mlx_backend/generation/disk_cache.py``). Those files can add up to gigabytes: the user sees
how much, can clear them (after a question), and picks a budget (Off keeps none). Measuring and
deleting run on a plain thread: a folder of big files must never hold up the GUI. The budget
applies from the next model load (the engine owns the folder while a model is loaded).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QMessageBox, QPushButton, QWidget

from app.settings import PROMPT_CACHE_BUDGETS, Settings

CACHE_SUFFIX = ".safetensors"  # the engine's cache files (disk_cache.SUFFIX; no MLX import here)


def folder_bytes(folder: Path) -> int:
    """Bytes the cache files in ``folder`` take (temporary files of a write in progress too)."""
    total = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for path in entries:
        try:
            if path.name.endswith(CACHE_SUFFIX) and path.is_file():
                total += path.stat().st_size
        except OSError:
            pass
    return total


def clear_folder(folder: Path) -> None:
    """Delete the cache files in ``folder`` (nothing else that might sit there)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for path in entries:
        if path.name.endswith(CACHE_SUFFIX) and path.is_file():
            path.unlink(missing_ok=True)


def size_words(nbytes: int) -> str:
    if nbytes < 1e6:
        return f"{nbytes / 1e3:.0f} KB" if nbytes else "nothing"
    if nbytes < 1e9:
        return f"{nbytes / 1e6:.0f} MB"
    return f"{nbytes / 1e9:.1f} GB"


def budget_label(nbytes: int) -> str:
    return "Off" if nbytes == 0 else f"Up to {nbytes // 2**30} GB"


class _Relay(QObject):
    measured = Signal(int)


class PromptCacheControls(QWidget):
    """The budget choice, the space used, and Clear; ``changed`` after a new budget is stored."""

    changed = Signal()

    def __init__(self, settings: Settings, folder: Path, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._settings = settings
        self.folder = folder
        self._relay = _Relay(self)
        self._relay.measured.connect(self._show_usage)
        self._busy = False
        self.nbytes: Optional[int] = None  # the last measurement (None: measuring)
        # Replaceable in tests: asks before deleting, True to go ahead.
        self.confirm: Callable[[str], bool] = self._ask
        self.budget_combo = QComboBox(self)
        for budget in PROMPT_CACHE_BUDGETS:
            self.budget_combo.addItem(budget_label(budget), budget)
        current = self.budget_combo.findData(settings.prompt_cache_budget_bytes)
        self.budget_combo.setCurrentIndex(max(current, 0))
        self.budget_combo.currentIndexChanged.connect(self._on_budget)
        self.usage_label = QLabel(self)
        self.clear_button = QPushButton("Clear\u2026", self)
        self.clear_button.setToolTip("Delete every saved prompt cache (chats stay; they load slower once)")
        self.clear_button.clicked.connect(self.clear)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(8)
        layout.addWidget(self.budget_combo)
        layout.addWidget(self.usage_label, 1)
        layout.addWidget(self.clear_button)
        self.refresh()

    def refresh(self) -> None:
        """Measure the folder again, on a thread."""
        self._start(lambda: None)

    def clear(self) -> None:
        if self._busy or not self.confirm(
            "Delete the saved prompt caches? Your chats are kept; a long chat reopens more slowly "
            "the first time, while its cache is rebuilt."
        ):
            return
        self._start(lambda: clear_folder(self.folder))

    def _start(self, work: Callable[[], None]) -> None:
        self._busy = True
        self.nbytes = None
        self.clear_button.setEnabled(False)
        self.usage_label.setText("Measuring\u2026")
        relay, folder = self._relay, self.folder

        def run() -> None:
            work()
            relay.measured.emit(folder_bytes(folder))  # queued to the GUI thread

        threading.Thread(target=run, name="prompt-cache-folder", daemon=True).start()

    def _show_usage(self, nbytes: int) -> None:
        self._busy = False
        self.nbytes = nbytes
        self.usage_label.setText(f"Uses {size_words(nbytes)}")
        self.clear_button.setEnabled(nbytes > 0)

    def _on_budget(self, _index: int) -> None:
        self._settings.prompt_cache_budget_bytes = int(self.budget_combo.currentData())
        self.changed.emit()

    def _ask(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Clear prompt caches", question)
        return answer == QMessageBox.StandardButton.Yes
