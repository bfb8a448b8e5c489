"""The Models window: planner badges, downloads (failure, cancel, success), folders, delete."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.models.manager import ModelManager
from app.settings import Settings
from mlx_backend.hub.catalog import CATALOG, find
from mlx_backend.hub.download import DownloadCancelled, list_cached_models
from tests.support.checkpoints import write_random_checkpoint

GiB = 2**30
BUDGET_16GB_MAC = int(16 * GiB * 0.67)
SMALL = "mlx-community/Qwen3-0.6B-4bit"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf-cache"


def fake_snapshot(cache: Path, repo_id: str) -> Path:
    """A complete model in the Hugging Face cache layout, as a finished download leaves it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = write_random_checkpoint(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def manager_for(qtbot, **kwargs) -> ModelManager:
    manager = ModelManager(Settings(), budget_bytes=BUDGET_16GB_MAC, confirm=False, **kwargs)
    qtbot.addWidget(manager)
    manager.show()
    return manager


def test_badges_come_from_the_memory_planner(qtbot, hf_cache) -> None:
    manager = manager_for(qtbot)
    expected = {
        "mlx-community/Qwen3-8B-4bit": ("Fits", "Badge_fits"),
        "mlx-community/Qwen3-14B-4bit": ("Tight", "Badge_tight"),
        "mlx-community/Qwen3-32B-8bit": ("Won\u2019t fit", "Badge_wont_fit"),
    }
    for repo, (word, name) in expected.items():
        badge = manager.rows[repo].badge
        assert (badge.text(), badge.objectName()) == (word, name)
        assert badge.toolTip() == find(repo).plan(budget_bytes=BUDGET_16GB_MAC).message
    assert len([key for key in manager.rows if key.startswith("mlx-community/")]) == len(CATALOG)
    # A 2026 model wins on a 16 GB Mac; the large-Mac MoE says who it is for.
    assert manager.recommended.repo_id == "mlx-community/Qwen3.5-9B-4bit"
    assert manager.rows["mlx-community/Qwen3.5-9B-4bit"].tag.text() == "Recommended for this Mac"
    assert manager.rows["mlx-community/Qwen3.5-122B-A10B-4bit"].tag.text() == "For Macs with 128 GB or more"
    # The 8-bit needs about 131 GB: the tag says what it really takes.
    assert manager.rows["mlx-community/Qwen3.5-122B-A10B-8bit"].tag.text() == "For Macs with 256 GB or more"
    assert manager.rows["mlx-community/Qwen3.5-122B-A10B-4bit"].badge.objectName() == "Badge_wont_fit"
    assert manager.rows["mlx-community/Qwen3-8B-4bit"].tag.text() == ""


def test_an_offline_download_fails_clearly_and_lists_no_half_model(qtbot, hf_cache) -> None:
    manager = manager_for(qtbot)  # the real resolver: huggingface_hub, offline
    [download] = [b for b in manager.rows[SMALL].findChildren(type(manager.add_folder_button))]
    assert download.text() == "Download"
    download.click()
    task = manager.downloads[SMALL]
    qtbot.waitUntil(lambda: not task.running and SMALL not in manager.downloads, timeout=20000)
    assert manager.error_label.isVisible()
    assert "offline" in manager.error_label.text() and SMALL in manager.error_label.text()
    row = manager.rows[SMALL]
    assert row.error.isVisible() and "offline" in row.error.text()
    assert [b.text() for b in row.findChildren(type(manager.add_folder_button)) if b.isVisible()] == ["Download"]
    assert list_cached_models() == []
    assert manager.installed() == []
    assert not hf_cache.exists() or not any(hf_cache.glob("models--*"))


def test_a_download_shows_progress_and_can_be_cancelled_leaving_nothing(qtbot, hf_cache) -> None:
    partial = hf_cache / "models--mlx-community--Qwen3-0.6B-4bit" / "blobs"
    started = threading.Event()

    def resolver(repo_id, *, progress, cancel):
        partial.mkdir(parents=True)
        (partial / "abc.incomplete").write_bytes(b"x" * 100)
        started.set()
        done = 0
        while not cancel.is_set():
            done += 1_000_000
            progress(done, 400_000_000)
            time.sleep(0.02)
        raise DownloadCancelled(f"The download of {repo_id} was cancelled.")

    manager = manager_for(qtbot, resolver=resolver)
    manager.download(SMALL)
    row = manager.rows[SMALL]
    qtbot.waitUntil(lambda: row.progress.maximum() == 1000 and row.progress.value() > 0, timeout=5000)
    assert " of 0.40 GB" in row.progress_label.text()
    [cancel] = [b for b in row.findChildren(type(manager.add_folder_button)) if b.text() == "Cancel"]
    qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: SMALL not in manager.downloads, timeout=5000)
    assert started.is_set()
    assert not (hf_cache / "models--mlx-community--Qwen3-0.6B-4bit").exists()  # partial blobs removed
    assert not manager.error_label.isVisible()
    assert manager.rows[SMALL].progress.isHidden()


def test_quitting_cancels_a_running_download_ends_its_thread_and_removes_partial_files(qtbot, hf_cache) -> None:
    partial = hf_cache / "models--mlx-community--Qwen3-0.6B-4bit" / "blobs"
    started = threading.Event()

    def resolver(repo_id, *, progress, cancel):
        partial.mkdir(parents=True)
        (partial / "abc.incomplete").write_bytes(b"x" * 100)
        started.set()
        while not cancel.wait(0.02):
            progress(1_000_000, 400_000_000)
        time.sleep(0.2)  # like huggingface_hub, notice the cancel only after the chunk in hand
        raise DownloadCancelled(f"The download of {repo_id} was cancelled.")

    manager = manager_for(qtbot, resolver=resolver)
    task = manager.download(SMALL)
    assert started.wait(5) and task.running
    signalled: list[str] = []
    task.cancelled.connect(lambda: signalled.append("cancelled"))
    task.progress.connect(lambda done, total: signalled.append("progress"))
    qtbot.wait(50)  # let queued progress from before the quit arrive
    signalled.clear()

    begun = time.monotonic()
    assert manager.shut_down_downloads(timeout_s=2.0)
    assert time.monotonic() - begun < 2.0
    assert not task.running
    assert not (hf_cache / "models--mlx-community--Qwen3-0.6B-4bit").exists()  # partial blobs removed
    qtbot.wait(50)
    assert signalled == []  # the quitting window hears nothing more from the thread


def test_quitting_waits_no_longer_than_the_bound_for_a_download_that_will_not_stop(qtbot, hf_cache) -> None:
    released = threading.Event()
    started = threading.Event()

    def stuck_resolver(repo_id, *, progress, cancel):
        started.set()
        released.wait(10)  # e.g. a read blocked on the network: the cancel goes unseen
        raise DownloadCancelled(f"The download of {repo_id} was cancelled.")

    manager = manager_for(qtbot, resolver=stuck_resolver)
    task = manager.download(SMALL)
    assert started.wait(5)
    try:
        begun = time.monotonic()
        assert not manager.shut_down_downloads(timeout_s=0.3)
        waited = time.monotonic() - begun
        assert 0.25 <= waited < 2.0 and task.running
    finally:
        released.set()
        assert task.wait(5)


def test_quitting_with_no_download_returns_at_once(qtbot, hf_cache) -> None:
    manager = manager_for(qtbot)
    assert manager.downloads == {}
    assert manager.shut_down_downloads(timeout_s=2.0)


def test_a_finished_download_moves_the_model_to_this_mac_and_can_be_used(qtbot, hf_cache) -> None:
    def resolver(repo_id, *, progress, cancel):
        progress(50, 100)
        snapshot = fake_snapshot(hf_cache, repo_id)
        progress(100, 100)
        return snapshot

    manager = manager_for(qtbot, resolver=resolver)
    with qtbot.waitSignal(manager.modelsChanged, timeout=10000):
        manager.download(SMALL)
    [installed] = manager.installed()
    assert installed.key == SMALL and installed.source == "cache"
    row = manager.rows[SMALL]
    assert row.findChildren(type(manager.add_folder_button))[0].text() == "Use"
    with qtbot.waitSignal(manager.modelChosen, timeout=2000) as chosen:
        row.findChildren(type(manager.add_folder_button))[0].click()
    assert chosen.args == [SMALL]

    [delete] = [b for b in manager.rows[SMALL].findChildren(type(manager.add_folder_button)) if b.text() == "Delete…"]
    with qtbot.waitSignal(manager.modelsChanged, timeout=2000):
        delete.click()
    assert list_cached_models() == [] and manager.installed() == []
    assert SMALL in manager.rows  # back in the download list


def test_a_local_folder_can_be_added_and_removed_without_deleting_it(qtbot, hf_cache, tmp_path) -> None:
    manager = manager_for(qtbot)
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    assert not manager.add_folder(str(empty))
    assert manager.error_label.isVisible() and "not-a-model" in manager.error_label.text()

    folder = write_random_checkpoint(tmp_path / "my-qwen")
    assert manager.add_folder(str(folder))
    assert not manager.error_label.isVisible()
    [installed] = manager.installed()
    assert (installed.key, installed.source) == (str(folder), "folder")
    assert manager.rows[str(folder)].badge.objectName() == "Badge_fits"  # planned from its config.json
    assert manager.delete(installed)
    assert manager.installed() == [] and (folder / "config.json").exists()


def test_first_run_opens_the_manager_pointing_at_the_default(qtbot, hf_cache) -> None:
    from app.window.main_window import MainWindow
    from app.chat.store import ConversationStore
    from app.worker.worker import WorkerClient

    client = WorkerClient(engine_loader=lambda path, progress: None)
    try:
        store = ConversationStore(hf_cache.parent / "data" / "c.sqlite3")
        window = MainWindow(
            store,
            client,
            Settings(),
            model_manager_factory=lambda parent: ModelManager(
                parent.settings, parent, budget_bytes=int(8 * GiB * 0.67), confirm=False
            ),
        )
        qtbot.addWidget(window)
        window.show()
        manager = window.open_model_manager(first_run=True)
        assert manager.isVisible()
        assert manager.recommended.repo_id == "mlx-community/Qwen3.5-4B-4bit"
        with qtbot.waitSignal(client.loadStarted, timeout=5000) as started:
            manager.modelChosen.emit(SMALL)
        assert started.args == [SMALL]
        # Remembered for the next launch only once it has loaded.
        qtbot.waitUntil(lambda: window.settings.model == SMALL, timeout=5000)
    finally:
        assert client.shutdown(5000)


def test_the_model_picker_lists_the_cache_off_the_gui_thread(qtbot) -> None:

    from app.models.installed import InstalledModel
    from app.window.model_picker import ModelPicker

    scanned_on: list[int] = []

    def scan() -> list[InstalledModel]:
        scanned_on.append(threading.get_ident())
        return [InstalledModel("mlx-community/Qwen3-0.6B-4bit", "Qwen3-0.6B-4bit", Path("/nowhere"), 1, "cache")]

    picker = ModelPicker(lambda: "", lambda: ["/models/local"], scan=scan)
    qtbot.addWidget(picker)
    picker.refresh()
    assert picker.findData("/models/local") >= 0  # what is known shows at once
    qtbot.waitUntil(lambda: picker.findData("mlx-community/Qwen3-0.6B-4bit") >= 0, timeout=5000)
    assert scanned_on and scanned_on[0] != threading.get_ident()
    chosen: list[str] = []
    picker.modelChosen.connect(chosen.append)
    picker.activated.emit(picker.findData("/models/local"))
    assert chosen == ["/models/local"]
