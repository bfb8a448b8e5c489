"""Issue 14, models: adding a folder loads it, the picker tells the truth (check mark, loading,
eject), a failed switch goes back, the Models window opens and scrolls sensibly, any Hugging
Face repo id can be judged before download, and a second launch hands over to the first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QPoint
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QLabel

from app.chat.store import DATABASE_NAME, ConversationStore
from app.models.installed import InstalledModel
from app.models.manager import ModelManager
from app.settings import Settings
from app.window.main_window import MainWindow
from app.window.model_picker import CHECK, EJECT_MODEL, NO_MODEL
from app.worker.worker import NO_MODEL_MESSAGE, WorkerClient
from mlx_backend.errors import ModelLoadError
from mlx_backend.hub.catalog import find
from mlx_backend.memory.plan import plan_memory
from tests.support.checkpoints import write_random_checkpoint
from tests.support.paths import REPO_ROOT

GiB = 2**30
BUDGET_16GB_MAC = int(16 * GiB * 0.67)
GOOD = "mlx-community/Qwen3-0.6B-4bit"
OTHER = "mlx-community/Qwen3-1.7B-4bit"
BROKEN = "mlx-community/Qwen3-4B-4bit"


@pytest.fixture
def data(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "data"


class Loader:
    """Stands in for Engine.load: fails for BROKEN, can hold a load until released."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.loaded: list[str] = []

    def __call__(self, key: str, progress):
        self.hold.wait(10)
        if key == BROKEN or key.endswith("broken"):
            raise ModelLoadError(f"{key} has a truncated model.safetensors.")
        self.loaded.append(key)
        return SimpleNamespace(info=None, stream=lambda request, cancel: iter(()))


def fake_cache(count: int):
    def installed() -> list[InstalledModel]:
        return [InstalledModel(f"someone/Qwen3-model-{i}", f"Qwen3-model-{i}", Path("/nowhere"), 10**9, "cache")
                for i in range(count)]
    return installed


def make_window(qtbot, data: Path, loader: Loader, *, settings: Settings | None = None, cached: int = 0):
    client = WorkerClient(engine_loader=loader)
    settings = settings or Settings()
    window = MainWindow(
        ConversationStore(data / DATABASE_NAME), client, settings,
        model_manager_factory=lambda parent: ModelManager(
            parent.settings, parent, budget_bytes=BUDGET_16GB_MAC, confirm=False,
            installed_models=fake_cache(cached)),
    )
    qtbot.addWidget(window)
    window.show()
    return window, client


def loaded(qtbot, client: WorkerClient, key: str) -> None:
    qtbot.waitUntil(lambda: client.model_name == key and not client.loading, timeout=10000)


def picker_items(window) -> list[tuple[str, str]]:
    picker = window.model_picker
    return [(picker.itemText(i), picker.itemData(i)) for i in range(picker.count())]


# --------------------------------------------------------------- the picker and loading
def test_a_folder_added_in_the_models_window_is_loaded_and_the_picker_marks_it(qtbot, data, tmp_path) -> None:
    window, client = make_window(qtbot, data, Loader())
    try:
        folder = write_random_checkpoint(tmp_path / "my-qwen")
        manager = window.open_model_manager()
        assert manager.add_folder(str(folder))
        loaded(qtbot, client, str(folder))
        picker = window.model_picker
        assert picker.currentData() == str(folder)
        assert picker.currentText().startswith(CHECK)
        marked = [text for text, _ in picker_items(window) if text.startswith(CHECK)]
        assert len(marked) == 1  # only the loaded model carries the check mark
        assert manager.rows[str(folder)].tag.text() == "In use"
        assert window.settings.model == str(folder)
    finally:
        assert client.shutdown(5000)


def test_the_picker_shows_no_model_and_loading_rather_than_a_remembered_name(qtbot, data) -> None:
    loader = Loader()
    loader.hold.clear()
    settings = Settings()
    settings.model = GOOD  # remembered, but nothing is loaded yet
    window, client = make_window(qtbot, data, loader, settings=settings)
    try:
        picker = window.model_picker
        assert picker.currentText() == NO_MODEL and picker.currentData() == ""
        assert not window.model_ready
        window.load_model(GOOD)
        qtbot.waitUntil(lambda: picker.currentText().startswith("Loading"), timeout=5000)
        assert "Qwen3-0.6B" in picker.currentText() and not window.model_ready
        with qtbot.waitSignal(window.modelReadyChanged, timeout=10000, check_params_cb=lambda ready: ready):
            loader.hold.set()
        assert picker.currentText().startswith(CHECK) and picker.currentData() == GOOD
    finally:
        loader.hold.set()
        assert client.shutdown(5000)


def test_eject_frees_the_model_and_nothing_loads_at_the_next_launch(qtbot, data) -> None:
    window, client = make_window(qtbot, data, Loader())
    try:
        window.load_model(GOOD)
        loaded(qtbot, client, GOOD)
        assert window.menus.eject_action.isEnabled()
        assert window.menus.eject_action.shortcut().toString() == "Ctrl+E"
        assert any(d == EJECT_MODEL and t.startswith("Eject") for t, d in picker_items(window))
        with qtbot.waitSignal(window.modelReadyChanged, timeout=5000) as ready:
            window.menus.eject_action.trigger()
        assert ready.args == [False]
        qtbot.waitUntil(lambda: client.model_name == "", timeout=5000)
        assert window.model_picker.currentText() == NO_MODEL
        assert all(d != EJECT_MODEL for _, d in picker_items(window))
        assert not window.menus.eject_action.isEnabled()
        assert window.settings.model == ""
        # The worker really holds no model now: a job that needs one is refused plainly.
        handle = client.submit(lambda engine, cancel: iter(()))
        with qtbot.waitSignal(handle.failed, timeout=5000) as failed:
            pass
        assert failed.args == [NO_MODEL_MESSAGE]
    finally:
        assert client.shutdown(5000)


def test_a_failed_switch_goes_back_to_the_previous_model(qtbot, data) -> None:
    loader = Loader()
    window, client = make_window(qtbot, data, loader)
    try:
        window.load_model(GOOD)
        loaded(qtbot, client, GOOD)
        window.load_model(BROKEN)
        qtbot.waitUntil(lambda: loader.loaded == [GOOD, GOOD], timeout=10000)
        loaded(qtbot, client, GOOD)
        assert window.settings.model == GOOD
        assert window.model_picker.currentData() == GOOD
        assert "Going back to" in window._load_error_box.informativeText()
        assert "truncated" in window._load_error_box.text()
    finally:
        assert client.shutdown(5000)


def test_a_model_that_fails_at_launch_is_not_retried_at_the_next_one(qtbot, data) -> None:
    settings = Settings()
    settings.model = BROKEN
    window, client = make_window(qtbot, data, Loader(), settings=settings)
    try:
        with qtbot.waitSignal(client.modelLoadFailed, timeout=10000):
            client.load_model(settings.model)  # what app.gui does at launch
        assert Settings().model == ""
        assert window.model_picker.currentText() == NO_MODEL
        assert "No model is loaded" in window._load_error_box.informativeText()
        assert not window.model_ready
    finally:
        assert client.shutdown(5000)


# ------------------------------------------------------------------- Add Folder checks
def test_add_folder_refuses_a_folder_without_a_tokenizer_in_plain_words(qtbot, data, tmp_path) -> None:
    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(0))
    qtbot.addWidget(manager)
    folder = write_random_checkpoint(tmp_path / "no-tokenizer", tokenizer=None)
    assert not manager.add_folder(str(folder))
    assert "tokenizer" in manager.error_label.text() and "no-tokenizer" in manager.error_label.text()
    assert Settings().local_models == []


def test_add_folder_on_the_parent_of_a_model_folder_takes_that_model(qtbot, data, tmp_path) -> None:
    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(0))
    qtbot.addWidget(manager)
    chosen: list[str] = []
    manager.modelChosen.connect(chosen.append)
    folder = write_random_checkpoint(tmp_path / "models" / "Qwen3-tiny")
    assert manager.add_folder(str(tmp_path / "models"))
    assert Settings().local_models == [str(folder)] and chosen == [str(folder)]

    empty = tmp_path / "photos"
    empty.mkdir()
    for bad in (empty, tmp_path / "gone"):
        assert not manager.add_folder(str(bad))
        message = manager.error_label.text()
        assert message and "Errno" not in message and bad.name in message


# ---------------------------------------------------------------------- Models window
def _fully_visible(scroll, widget) -> bool:
    top = widget.mapTo(scroll.viewport(), QPoint(0, 0)).y()
    return top >= 0 and top + widget.height() <= scroll.viewport().height()


def test_the_models_window_opens_with_this_mac_and_the_recommended_row_in_view(qtbot, data) -> None:
    window, client = make_window(qtbot, data, Loader(), cached=2)
    try:
        manager = window.open_model_manager(first_run=True)
        manager.resize(780, 470)  # an 800 x 500 screen
        qtbot.wait(50)
        manager.show_recommended()
        section = next(label for label in manager._list.findChildren(QLabel) if label.text() == "ON THIS MAC")
        assert _fully_visible(manager._scroll, section)
        assert _fully_visible(manager._scroll, manager.rows[manager.recommended.repo_id])
    finally:
        assert client.shutdown(5000)


def test_the_models_window_scrolls_to_a_just_added_folder(qtbot, data, tmp_path) -> None:
    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(12))
    qtbot.addWidget(manager)
    manager.resize(780, 470)
    manager.show()
    qtbot.wait(50)
    folder = write_random_checkpoint(tmp_path / "late-addition")
    assert manager.add_folder(str(folder))  # no window listens: nothing loads
    assert _fully_visible(manager._scroll, manager.rows[str(folder)])


def test_an_old_download_error_clears_when_a_new_action_starts(qtbot, data) -> None:
    release = threading.Event()

    def resolver(repo_id, *, progress, cancel):
        if repo_id == GOOD:
            raise ModelLoadError("The disk is full.")
        release.wait(10)
        raise ModelLoadError("stopped")

    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False,
                           installed_models=fake_cache(0), resolver=resolver)
    qtbot.addWidget(manager)
    manager.show()
    manager.download(GOOD)
    qtbot.waitUntil(lambda: manager.error_label.isVisible(), timeout=5000)
    assert manager.rows[GOOD].error.isVisibleTo(manager)
    manager.download(OTHER)
    try:
        assert not manager.error_label.isVisible()
        assert not manager.rows[GOOD].error.isVisibleTo(manager)
    finally:
        release.set()
        qtbot.waitUntil(lambda: OTHER not in manager.downloads, timeout=5000)


def _contrast(a: QColor, b: QColor) -> float:
    def luminance(color: QColor) -> float:
        def channel(c: float) -> float:
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        return 0.2126 * channel(color.redF()) + 0.7152 * channel(color.greenF()) + 0.0722 * channel(color.blueF())
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_no_models_yet_is_readable_in_light_and_dark(qtbot, data, theme) -> None:
    from app.window.theme import ThemeManager

    app = QApplication.instance()
    old_sheet, old_palette = app.styleSheet(), app.palette()
    ThemeManager(app, theme)
    try:
        manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(0))
        qtbot.addWidget(manager)
        manager.show()
        [empty] = [label for label in manager._list.findChildren(QLabel) if label.text().startswith("No models yet")]
        empty.ensurePolished()
        text = empty.palette().color(QPalette.ColorRole.WindowText)
        background = manager.palette().color(QPalette.ColorRole.Window)
        assert _contrast(text, background) >= 4.5, (text.name(), background.name())
    finally:
        app.setStyleSheet(old_sheet)
        app.setPalette(old_palette)


def test_local_models_show_type_parameters_quantization_context_size_and_path(qtbot, data, tmp_path) -> None:
    folder = write_random_checkpoint(tmp_path / "my-qwen", max_position_embeddings=32768)
    settings = Settings()
    settings.local_models = [str(folder)]
    manager = ModelManager(settings, budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(0))
    qtbot.addWidget(manager)
    detail = manager.rows[str(folder)].detail.text()
    config = json.loads((folder / "config.json").read_text())
    for expected in (config["model_type"], "parameters", config.get("torch_dtype", "float32"), "32K context", "MB", str(folder)):
        assert expected in detail, (expected, detail)


# ------------------------------------------------------------- any Hugging Face repo id
def test_any_repo_id_is_judged_from_its_config_before_download(qtbot, data) -> None:
    config = dict(find("mlx-community/Qwen3-8B-4bit").config)
    fetched: list[str] = []

    def fetcher(repo_id: str) -> dict:
        fetched.append(repo_id)
        return config

    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False,
                           installed_models=fake_cache(0), config_fetcher=fetcher)
    qtbot.addWidget(manager)
    manager.show()
    manager.repo_field.setText("  someone/Qwen3-8B-finetune-4bit ")
    manager.check_button.click()
    qtbot.waitUntil(lambda: "someone/Qwen3-8B-finetune-4bit" in manager.rows, timeout=5000)
    row = manager.rows["someone/Qwen3-8B-finetune-4bit"]
    expected = plan_memory(config, 8192, budget_bytes=BUDGET_16GB_MAC)
    assert row.badge.objectName() == f"Badge_{expected.verdict}" and row.badge.toolTip() == expected.message
    assert fetched == ["someone/Qwen3-8B-finetune-4bit"]
    assert [b.text() for b in row.findChildren(type(manager.check_button))] == ["Download"]


def test_checking_a_repo_id_offline_says_so(qtbot, data) -> None:
    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, installed_models=fake_cache(0))
    qtbot.addWidget(manager)
    manager.show()
    manager.check_repo("someone/Qwen3-8B-finetune-4bit")  # the real fetcher; HF_HUB_OFFLINE=1
    qtbot.waitUntil(lambda: manager.error_label.isVisible(), timeout=10000)
    assert "offline" in manager.error_label.text()
    assert "someone/Qwen3-8B-finetune-4bit" not in manager.rows


# ------------------------------------------------------------------- single instance
_FIRST_INSTANCE = """
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from app.gui import run_gui
from app.single_instance import SingleInstance

app = QApplication(sys.argv[:1])

def hook():
    [instance] = app.findChildren(SingleInstance)
    instance.filesReceived.connect(lambda files: (print("GOT", *files, flush=True), QApplication.quit()))
    print("READY", flush=True)

QTimer.singleShot(0, hook)
QTimer.singleShot(60000, QApplication.quit)
sys.exit(run_gui([]))
"""


def test_a_second_launch_hands_its_file_to_the_running_app_and_exits(tmp_path: Path) -> None:
    env = {**os.environ, "QWEN_DESK_DATA_DIR": str(tmp_path / "data"), "HF_HUB_CACHE": str(tmp_path / "hf"),
           "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1"}
    note = tmp_path / "note.txt"
    note.write_text("hello")
    first = subprocess.Popen([sys.executable, "-c", _FIRST_INSTANCE], cwd=REPO_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None
        ready = first.stdout.readline()
        assert ready.strip() == "READY", first.stderr.read() if first.poll() is not None else ready
        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "app.main", str(note)], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "already running" in second.stderr
        assert first.stdout.readline().split() == ["GOT", str(note.resolve())]
        assert first.wait(30) == 0
        assert time.monotonic() - started < 30
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
