"""The Models window: what is on this Mac, what can be downloaded, and whether it fits.

Every row shows the memory planner's verdict (fits / tight / won't fit) for this machine at
the planning context, with the planner's explanation as its tooltip. Downloads run off the GUI
thread with a progress bar and Cancel; a failed download shows why and leaves nothing listed.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app.models.downloads import DownloadTask, Resolver, _resolve, cancel_and_wait
from app.models.rows import GB, ModelRow, size_words
from app.models.speed_up import SpeedUp, draft_candidates, engine_has_mtp, has_mtp_weights
from app.models.speed_up_row import SpeedUpControls
from app.models.installed import (
    InstalledModel, find_model_folder, folder_size, installed_cache_models, model_facts)
from app.settings import Settings
from mlx_backend.hub.catalog import CATALOG, PLANNING_CONTEXT_TOKENS, CatalogModel, recommended_default
from mlx_backend.errors import QwenDeskError

log = logging.getLogger(__name__)
ConfigFetcher = Callable[[str], dict]


def _fetch_config(repo_id: str) -> dict:  # pragma: no cover - thin indirection
    from mlx_backend.hub.remote_config import fetch_config

    return fetch_config(repo_id)


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
    # A model's speed-up choice changed (already stored in the settings): its key.
    speedUpChanged = Signal(str)
    # (repo id, config or None, error message): from the checking thread, queued to the GUI's.
    _checked = Signal(str, object, str)

    def __init__(
        self,
        settings: Settings,
        parent: Optional[QWidget] = None,
        *,
        budget_bytes: Optional[int] = None,
        resolver: Resolver = _resolve,
        installed_models: Callable[[], list[InstalledModel]] = installed_cache_models,
        confirm: bool = True,
        config_fetcher: ConfigFetcher = _fetch_config,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.setMinimumSize(560, 400)  # usable on a small screen (800 x 500)
        self.resize(760, 620)
        self._settings = settings
        self._fetch_config = config_fetcher
        # Repos typed in by id and checked: their config.json, judged like the catalog's.
        self.checked_repos: dict[str, dict[str, Any]] = {}
        self._checked.connect(self._on_checked)
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
        self.loaded_info: object = None  # the loaded engine's info: does it have MTP heads?
        self._installed_now: list[InstalledModel] = []
        # Why a model's chosen speed-up could not be used at its last load (shown in its row).
        self.speed_up_notes: dict[str, str] = {}
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

        self.repo_field = QLineEdit(self)
        self.repo_field.setPlaceholderText("Any Hugging Face repo id, e.g. mlx-community/Qwen3-4B-Instruct-2507-4bit")
        self.repo_field.returnPressed.connect(self.check_typed_repo)
        self.check_button = QPushButton("Check", self)
        self.check_button.setObjectName("SecondaryButton")
        self.check_button.setAutoDefault(False)
        self.check_button.setToolTip("Fetch only its config.json and judge whether it fits this Mac")
        self.check_button.clicked.connect(self.check_typed_repo)
        self.check_label = QLabel("", self)
        self.check_label.setObjectName("EmptySubtitle")
        self.check_label.hide()
        repo_row = QHBoxLayout()
        repo_row.addWidget(self.repo_field, 1)
        repo_row.addWidget(self.check_button)

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
        layout.addLayout(repo_row)
        layout.addWidget(self.check_label)
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
        installed = self._installed_now = self.installed()
        installed_keys = {m.key.lower() for m in installed}
        self._add_section("On this Mac")
        if not installed:
            empty = QLabel("No models yet. Download one below or add a folder.", self._list)
            empty.setObjectName("EmptySubtitle")  # readable body text, not the faint caption colour
            empty.setContentsMargins(16, 8, 16, 8)
            self._list_layout.addWidget(empty)
        for model in installed:
            self._add_installed_row(model)
        checked = [repo for repo in self.checked_repos if repo.lower() not in installed_keys and not _catalog_entry(repo)]
        if checked:
            self._add_section("From Hugging Face")
            for repo in checked:
                self._add_checked_row(repo, self.checked_repos[repo])
        self._add_section("Qwen models from mlx-community")
        # The recommended model first: the window opens with it in view under "On this Mac".
        entries = sorted(CATALOG, key=lambda e: e.repo_id != self.recommended.repo_id)
        for entry in entries:
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
        else:
            facts = model_facts(model.path)
            if facts is not None:
                details.insert(0, facts.words())
        details.append("Hugging Face cache" if model.source == "cache" else str(model.path))
        row = ModelRow(model.key, entry.display_name if entry else model.title, "  \u00b7  ".join(details), plan, self._list)
        if model.key == self.loaded_key:
            row.tag.setText("In use")
        use = row.add_button("Use", lambda key=model.key: self._choose(key))
        use.setEnabled(model.key != self.loaded_key)
        row.add_button("Remove" if model.source == "folder" else "Delete\u2026", lambda m=model: self.delete(m))
        row.add_line(self._speed_up_controls(model, row))
        self.rows[model.key] = row
        self._list_layout.addWidget(row)
        row.show()  # now, not on the next event-loop turn: what follows may show its error

    def _speed_up_controls(self, model: InstalledModel, row: ModelRow) -> SpeedUpControls:
        has_mtp = has_mtp_weights(model.path) or (model.key == self.loaded_key and engine_has_mtp(self.loaded_info))
        drafts = draft_candidates(model, self._installed_now)
        names = {m.key: entry.display_name if (entry := _catalog_entry(m.key)) else m.title for m in drafts}
        controls = SpeedUpControls(self._settings.speed_up(model.key), drafts, has_mtp, row, draft_names=names)
        controls.changed.connect(lambda choice, key=model.key: self._on_speed_up(key, choice))
        row.speed_up = controls
        if model.key in self.speed_up_notes:
            row.show_error(self.speed_up_notes[model.key])
        return controls

    def _on_speed_up(self, key: str, choice: SpeedUp) -> None:
        self._settings.set_speed_up(key, choice)
        if self.speed_up_notes.pop(key, None) and key in self.rows:
            self.rows[key].show_error("")
        self.speedUpChanged.emit(key)

    def note_speed_up_failed(self, key: str, message: str) -> None:
        """``key`` loaded without its speed-up: say why in its row (until the choice changes)."""
        self.speed_up_notes[key] = message
        if key in self.rows:
            self.rows[key].show_error(message)

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
        self._add_download_row(row)

    def _add_checked_row(self, repo_id: str, config: dict[str, Any]) -> None:
        facts = model_facts(config)
        from mlx_backend.memory.sizes import estimate_weights_bytes

        try:
            size = size_words(estimate_weights_bytes(config))
        except Exception:  # noqa: BLE001 - a config the planner can't size still shows
            size = "size unknown"
        detail = "  \u00b7  ".join(p for p in (facts.words() if facts else "", size, "checked on Hugging Face") if p)
        row = ModelRow(repo_id, repo_id.split("/")[-1], detail, _plan_for(config, self.budget_bytes), self._list)
        self._add_download_row(row)

    def _add_download_row(self, row: ModelRow) -> None:
        task = self.downloads.get(row.key)
        if task is not None and task.running:
            self._show_downloading(row, task)
        else:
            row.add_button("Download", lambda key=row.key: self.download(key))
        self.rows[row.key] = row
        self._list_layout.addWidget(row)
        row.show()  # now, not on the next event-loop turn: what follows may show its error

    def set_loaded(self, key: str, info: object = None) -> None:
        self.loaded_key = key
        self.loaded_info = info
        self.refresh()

    def show_recommended(self) -> None:
        """First run: point at the default for this machine's memory (it sits right under
        "On this Mac", so both are in view)."""
        self.reveal(self.recommended.repo_id)

    def reveal(self, key: Optional[str] = None) -> None:
        """Scroll to the top ("On this Mac"), then just enough to show ``key``'s row whole."""
        self._list.layout().activate()  # geometry now, not after the next event-loop turn
        self._scroll.verticalScrollBar().setValue(0)
        row = self.rows.get(key) if key else None
        if row is not None:
            self._scroll.ensureWidgetVisible(row, 0, 8)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        if not event.spontaneous():
            QTimer.singleShot(0, self.reveal)  # opens at the top, whatever it showed last time

    def clear_errors(self) -> None:
        """A new action starts: an old failure no longer applies."""
        self.error_label.hide()
        self.error_label.setText("")
        for row in self.rows.values():
            row.show_error("")

    # ------------------------------------------------------ any repo by id
    def check_typed_repo(self) -> None:
        self.check_repo(self.repo_field.text())

    def check_repo(self, repo_id: str) -> None:
        """Fetch only ``repo_id``'s config.json (off the GUI thread) and list it with its badge."""
        repo_id = repo_id.strip()
        if not repo_id:
            return
        self.clear_errors()
        if _catalog_entry(repo_id) is not None or repo_id in self.checked_repos:
            self.check_label.hide()
            self.reveal(next((k for k in self.rows if k.lower() == repo_id.lower()), None))
            return
        self.check_label.setText(f"Checking {repo_id}\u2026")
        self.check_label.show()
        self.check_button.setEnabled(False)
        threading.Thread(target=self._run_check, args=(repo_id,), name="check-repo", daemon=True).start()

    def _run_check(self, repo_id: str) -> None:
        """Background thread: no widget touched here, only the signal emitted."""
        try:
            config = self._fetch_config(repo_id)
        except QwenDeskError as error:
            self._checked.emit(repo_id, None, str(error))
        except Exception as error:  # noqa: BLE001 - reported, never raised into Qt
            log.warning("checking %s failed", repo_id, exc_info=True)
            self._checked.emit(repo_id, None, f"Could not check {repo_id}: {error}")
        else:
            self._checked.emit(repo_id, config, "")

    def _on_checked(self, repo_id: str, config: object, message: str) -> None:
        self.check_button.setEnabled(True)
        self.check_label.hide()
        if config is None:
            self.error_label.setText(message)
            self.error_label.show()
            return
        self.checked_repos[repo_id] = dict(config)  # type: ignore[call-overload]
        self.refresh()
        self.reveal(repo_id)

    # ------------------------------------------------------------- actions
    def _choose(self, key: str) -> None:
        self.clear_errors()
        self.modelChosen.emit(key)
        self.accept()

    def download(self, repo_id: str) -> DownloadTask:
        existing = self.downloads.get(repo_id)
        if existing is not None and existing.running:
            return existing
        self.clear_errors()
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
        self.clear_errors()
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
        folder = QFileDialog.getExistingDirectory(self, "Choose a Qwen Model Folder")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str, *, load: bool = True) -> bool:
        """Check ``folder`` (or the one model folder inside it), list it and, with ``load``, load it."""
        self.clear_errors()
        try:
            path = find_model_folder(Path(folder))
        except QwenDeskError as error:
            self.error_label.setText(str(error))
            self.error_label.show()
            return False
        key = str(path)
        if key not in self._settings.local_models:
            self._settings.local_models = [*self._settings.local_models, key]
        self.refresh()
        self.modelsChanged.emit()
        self.reveal(key)
        if load and key != self.loaded_key:
            row = self.rows.get(key)
            if row is not None:
                row.tag.setText("Loading\u2026")
            self.modelChosen.emit(key)  # a model added to be used: load it now
        return True


def _catalog_entry(key: str) -> Optional[CatalogModel]:
    from mlx_backend.hub.catalog import find

    return find(key)
