"""The Models window: what is on this Mac, what can be downloaded, and whether it fits.

Every row shows the memory planner's verdict (fits / tight / won't fit) for this machine at
the planning context, with the planner's explanation as its tooltip. Downloads run off the GUI
thread with a progress bar and Cancel; a failed download shows why and leaves nothing listed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.models.downloads import DownloadTask, Resolver, _resolve, cancel_and_wait
from app.models.rows import GB, ModelRow, size_words
from app.models.installed import InstalledModel, folder_size, installed_cache_models, validate_model_folder
from app.settings import Settings
from mlx_backend.hub.catalog import CATALOG, PLANNING_CONTEXT_TOKENS, CatalogModel, recommended_default
from mlx_backend.errors import QwenDeskError

log = logging.getLogger(__name__)
def _plan_for(config_source, budget_bytes: int):
    from mlx_backend.memory.plan import plan_memory

    try:
        return plan_memory(config_source, PLANNING_CONTEXT_TOKENS, budget_bytes=budget_bytes)
    except (QwenDeskError, KeyError, ValueError, TypeError):
        return None


class ModelManager(QDialog):
    """Emits ``modelChosen(key)`` when the user picks a model to load; ``modelsChanged`` when
    the installed set changes (download finished, folder added, model deleted)."""

    modelChosen = Signal(str)
    modelsChanged = Signal()

    def __init__(
        self,
        settings: Settings,
        parent: Optional[QWidget] = None,
        *,
        budget_bytes: Optional[int] = None,
        resolver: Resolver = _resolve,
        installed_models: Callable[[], list[InstalledModel]] = installed_cache_models,
        confirm: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setMinimumSize(720, 560)
        self._settings = settings
        self._resolver = resolver
        self._installed_models = installed_models
        self.confirm = confirm
        if budget_bytes is None:
            from mlx_backend.memory.device import memory_budget

            budget = memory_budget()
            budget_bytes, source = budget.bytes, budget.source
        else:
            source = "the given budget"
        self.budget_bytes = budget_bytes
        self.recommended = recommended_default(budget_bytes)
        self.loaded_key = ""
        self.rows: dict[str, ModelRow] = {}
        self.downloads: dict[str, DownloadTask] = {}

        header = QLabel("Models", self)
        header.setObjectName("EmptyTitle")
        self.subtitle = QLabel(
            f"{budget_bytes / GB:.1f} GB of memory for models on this Mac ({source}). "
            f"Badges judge each model with a {PLANNING_CONTEXT_TOKENS:,}-token conversation.",
            self,
        )
        self.subtitle.setObjectName("EmptySubtitle")
        self.subtitle.setWordWrap(True)
        self.error_label = QLabel("", self)
        self.error_label.setObjectName("ManagerError")
        self.error_label.setWordWrap(True)
        self.error_label.hide()

        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(0, 0, 0, 0)
        self._list_layout.setSpacing(0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self._list)
        self._scroll = scroll

        self.add_folder_button = QPushButton("Add Folder\u2026", self)
        self.add_folder_button.setObjectName("SecondaryButton")
        self.add_folder_button.setAutoDefault(False)
        self.add_folder_button.clicked.connect(self.choose_folder)
        close = QPushButton("Done", self)
        close.setObjectName("PrimaryButton")
        close.setDefault(True)
        close.clicked.connect(self.accept)
        footer = QHBoxLayout()
        footer.addWidget(self.add_folder_button)
        footer.addStretch(1)
        footer.addWidget(close)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(20, 18, 20, 16)
        layout.setSpacing(8)
        layout.addWidget(header)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.error_label)
        layout.addWidget(scroll, 1)
        layout.addLayout(footer)
        self.refresh()

    # ---------------------------------------------------------------- rows
    def installed(self) -> list[InstalledModel]:
        models = list(self._installed_models())
        known = {m.key for m in models}
        for folder in self._settings.local_models:
            path = Path(folder)
            if folder not in known and path.is_dir():
                models.append(InstalledModel(folder, path.name, path, folder_size(path), "folder"))
        return models

    def refresh(self) -> None:
        while self._list_layout.count():
            item = self._list_layout.takeAt(0)
            widget = item.widget()
            if widget is not None:
                widget.hide()  # deleteLater waits for the event loop: don't let it linger on screen
                widget.setParent(None)
                widget.deleteLater()
        self.rows = {}
        installed = self.installed()
        installed_keys = {m.key.lower() for m in installed}
        self._add_section("On this Mac")
        if not installed:
            empty = QLabel("No models yet. Download one below or add a folder.", self._list)
            empty.setObjectName("MutedLabel")
            empty.setContentsMargins(16, 8, 16, 8)
            self._list_layout.addWidget(empty)
        for model in installed:
            self._add_installed_row(model)
        self._add_section("Qwen models from mlx-community")
        for entry in CATALOG:
            if entry.repo_id.lower() not in installed_keys:
                self._add_catalog_row(entry)
        self._list_layout.addStretch(1)

    def _add_section(self, title: str) -> None:
        label = QLabel(title.upper(), self._list)
        label.setObjectName("SectionLabel")
        self._list_layout.addWidget(label)

    def _add_installed_row(self, model: InstalledModel) -> None:
        entry = _catalog_entry(model.key)
        plan = entry.plan(budget_bytes=self.budget_bytes) if entry else _plan_for(model.path, self.budget_bytes)
        details = [size_words(model.size_bytes)]
        if entry:
            details.insert(0, f"{entry.parameters_label} parameters, {entry.context_length // 1024}K context")
        details.append("Hugging Face cache" if model.source == "cache" else str(model.path))
        row = ModelRow(model.key, entry.display_name if entry else model.title, "  \u00b7  ".join(details), plan, self._list)
        if model.key == self.loaded_key:
            row.tag.setText("In use")
        use = row.add_button("Use", lambda key=model.key: self._choose(key))
        use.setEnabled(model.key != self.loaded_key)
        row.add_button("Remove" if model.source == "folder" else "Delete\u2026", lambda m=model: self.delete(m))
        self.rows[model.key] = row
        self._list_layout.addWidget(row)
        row.show()  # now, not on the next event-loop turn: what follows may show its error

    def _add_catalog_row(self, entry: CatalogModel) -> None:
        detail = (
            f"{entry.parameters_label} parameters, {entry.context_length // 1024}K context  \u00b7  "
            f"{size_words(entry.size_bytes)}  \u00b7  {entry.description}"
        )
        row = ModelRow(entry.repo_id, entry.display_name, detail, entry.plan(budget_bytes=self.budget_bytes), self._list)
        if entry.repo_id == self.recommended.repo_id:
            row.tag.setText("Recommended for this Mac")
        elif entry.large_mac:
            smallest = entry.smallest_mac_gb()
            row.tag.setText(f"For Macs with {smallest} GB or more" if smallest else "Too large for one Mac")
        task = self.downloads.get(entry.repo_id)
        if task is not None and task.running:
            self._show_downloading(row, task)
        else:
            row.add_button("Download", lambda key=entry.repo_id: self.download(key))
        self.rows[entry.repo_id] = row
        self._list_layout.addWidget(row)
        row.show()  # now, not on the next event-loop turn: what follows may show its error

    def set_loaded(self, key: str) -> None:
        self.loaded_key = key
        self.refresh()

    def show_recommended(self) -> None:
        """First run: point at the default for this machine's memory."""
        row = self.rows.get(self.recommended.repo_id)
        if row is not None:
            self._scroll.ensureWidgetVisible(row)

    # ------------------------------------------------------------- actions
    def _choose(self, key: str) -> None:
        self.modelChosen.emit(key)
        self.accept()

    def download(self, repo_id: str) -> DownloadTask:
        existing = self.downloads.get(repo_id)
        if existing is not None and existing.running:
            return existing
        self.error_label.hide()
        task = DownloadTask(repo_id, self._resolver, self)
        task.progress.connect(lambda done, total, key=repo_id: self._on_progress(key, done, total))
        task.succeeded.connect(lambda folder, key=repo_id: self._on_downloaded(key, folder))
        task.failed.connect(lambda message, key=repo_id: self._on_download_failed(key, message))
        task.cancelled.connect(lambda key=repo_id: self._on_download_cancelled(key))
        self.downloads[repo_id] = task
        row = self.rows.get(repo_id)
        if row is not None:
            row.show_error("")
            self._show_downloading(row, task)
        task.start()
        return task

    def _show_downloading(self, row: ModelRow, task: DownloadTask) -> None:
        while row.buttons.count():
            item = row.buttons.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        row.progress.setRange(0, 0)
        row.progress.show()
        row.progress_label.setText("Starting\u2026")
        row.progress_label.show()
        row.add_button("Cancel", task.cancel)

    def _on_progress(self, key: str, done: int, total: int) -> None:
        row = self.rows.get(key)
        if row is None:
            return
        if total > 0:
            row.progress.setRange(0, 1000)
            row.progress.setValue(int(1000 * min(done, total) / total))
            row.progress_label.setText(f"{done / GB:.2f} of {total / GB:.2f} GB")

    def _on_downloaded(self, key: str, _folder: str) -> None:
        self.downloads.pop(key, None)
        self.refresh()
        self.modelsChanged.emit()

    def _on_download_failed(self, key: str, message: str) -> None:
        self.downloads.pop(key, None)
        self.refresh()
        self.error_label.setText(message)
        self.error_label.show()
        row = self.rows.get(key)
        if row is not None:
            row.show_error(message)

    def _on_download_cancelled(self, key: str) -> None:
        self.downloads.pop(key, None)
        self.refresh()

    def cancel_downloads(self) -> None:
        for task in list(self.downloads.values()):
            task.cancel()

    def shut_down_downloads(self, timeout_s: float) -> bool:
        """On quit: cancel every download and wait up to ``timeout_s`` in total for its thread.

        The threads remove their partial files and, being silenced, signal nothing to this
        window as it is torn down. True when all of them ended in time."""
        still_running = cancel_and_wait(self.downloads.values(), timeout_s)
        for task in still_running:
            log.warning("the download of %s did not stop within %.1f s", task.repo_id, timeout_s)
        return not still_running

    def delete(self, model: InstalledModel) -> bool:
        if model.source == "folder":
            self._settings.local_models = [f for f in self._settings.local_models if f != model.key]
        else:
            if self.confirm:
                answer = QMessageBox.question(
                    self,
                    "Delete Model",
                    f"Delete {model.title} ({size_words(model.size_bytes)}) from this Mac? "
                    "You can download it again later.",
                    QMessageBox.StandardButton.Cancel | QMessageBox.StandardButton.Yes,
                    QMessageBox.StandardButton.Cancel,
                )
                if answer != QMessageBox.StandardButton.Yes:
                    return False
            from mlx_backend.hub.download import delete_cached_model

            try:
                delete_cached_model(model.key)
            except QwenDeskError as error:
                self.error_label.setText(str(error))
                self.error_label.show()
                return False
        self.refresh()
        self.modelsChanged.emit()
        return True

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a Qwen3 Model Folder")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> bool:
        path = Path(folder).expanduser()
        try:
            validate_model_folder(path)
        except QwenDeskError as error:
            self.error_label.setText(str(error))
            self.error_label.show()
            return False
        self.error_label.hide()
        self._settings.local_models = [*self._settings.local_models, str(path)]
        self.refresh()
        self.modelsChanged.emit()
        return True


def _catalog_entry(key: str) -> Optional[CatalogModel]:
    from mlx_backend.hub.catalog import find

    return find(key)
