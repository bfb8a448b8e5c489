"""Settings > Prompt cache on disk: the space it takes, Clear (asked first, off the GUI thread),
and a budget the worker hands to the engine when it loads a model (Off: no disk cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from app.settings import DEFAULT_PROMPT_CACHE_BUDGET, PROMPT_CACHE_BUDGETS, Settings
from app.window.preferences import PROMPT_CACHE_BUDGET, PreferencesDialog
from app.window.prompt_cache_controls import PromptCacheControls
from app.worker import worker


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def cache_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "prompt-cache"
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(b"\0" * 300_000)
    (folder / "b.safetensors").write_bytes(b"\0" * 2_200_000)
    (folder / "notes.txt").write_text("not ours")  # anything else there is left alone
    return folder


def controls(qtbot, settings: Settings, folder: Path) -> PromptCacheControls:
    widget = PromptCacheControls(settings, folder)
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: widget.nbytes is not None, timeout=5000)
    return widget


def test_the_default_budget_is_the_engines_and_a_choice_persists(tmp_path: Path, settings: Settings) -> None:
    from mlx_backend.generation.disk_cache import DEFAULT_DISK_BUDGET_BYTES

    assert settings.prompt_cache_budget_bytes == DEFAULT_PROMPT_CACHE_BUDGET == DEFAULT_DISK_BUDGET_BYTES
    assert DEFAULT_PROMPT_CACHE_BUDGET in PROMPT_CACHE_BUDGETS and 0 in PROMPT_CACHE_BUDGETS
    settings.prompt_cache_budget_bytes = 0
    settings.sync()
    again = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    assert again.prompt_cache_budget_bytes == 0
    again._q.setValue("cache/disk_budget_bytes", "lots")
    assert again.prompt_cache_budget_bytes == DEFAULT_PROMPT_CACHE_BUDGET


def test_the_line_shows_the_space_the_cache_files_take(qtbot, settings: Settings, cache_folder: Path) -> None:
    widget = controls(qtbot, settings, cache_folder)
    assert widget.nbytes == 2_500_000
    assert widget.usage_label.text() == "Uses 2 MB"
    assert widget.clear_button.isEnabled()
    assert widget.budget_combo.currentData() == DEFAULT_PROMPT_CACHE_BUDGET


def test_clear_asks_first_and_deletes_only_cache_files(qtbot, settings: Settings, cache_folder: Path) -> None:
    widget = controls(qtbot, settings, cache_folder)
    questions: list[str] = []
    widget.confirm = lambda text: questions.append(text) or False
    widget.clear()
    assert len(questions) == 1 and (cache_folder / "a.safetensors").exists()  # declined: nothing gone
    widget.confirm = lambda text: True
    widget.clear()
    qtbot.waitUntil(lambda: widget.nbytes is not None, timeout=5000)
    assert widget.nbytes == 0 and widget.usage_label.text() == "Uses nothing"
    assert sorted(p.name for p in cache_folder.iterdir()) == ["notes.txt"]
    assert not widget.clear_button.isEnabled()


def test_a_missing_folder_reads_as_empty(qtbot, settings: Settings, tmp_path: Path) -> None:
    widget = controls(qtbot, settings, tmp_path / "never-made")
    assert widget.nbytes == 0 and not widget.clear_button.isEnabled()


def test_choosing_off_in_settings_stores_it_and_says_so(qtbot, settings: Settings) -> None:
    dialog = PreferencesDialog(settings)
    qtbot.addWidget(dialog)
    changed: list[str] = []
    dialog.settingChanged.connect(changed.append)
    combo = dialog.prompt_cache.budget_combo
    assert [combo.itemText(i) for i in range(combo.count())] == ["Off", "Up to 2 GB", "Up to 8 GB", "Up to 32 GB"]
    combo.setCurrentIndex(combo.findData(0))
    assert settings.prompt_cache_budget_bytes == 0 and changed == [PROMPT_CACHE_BUDGET]
    combo.setCurrentIndex(combo.findData(32 * 2**30))
    assert settings.prompt_cache_budget_bytes == 32 * 2**30


@pytest.mark.parametrize("budget", [0, 2 * 2**30])
def test_the_worker_loads_the_model_with_the_chosen_budget(monkeypatch, tmp_path: Path, budget: int) -> None:
    from app.paths import prompt_cache_dir
    from mlx_backend.generation.engine import Engine

    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path))
    Settings().prompt_cache_budget_bytes = budget
    Settings().sync()
    calls: list[dict] = []
    monkeypatch.setattr(Engine, "load", classmethod(lambda cls, path, **kwargs: calls.append(kwargs) or "engine"))
    assert worker._default_engine_loader("some/model", lambda *_: None) == "engine"
    (kwargs,) = calls
    assert kwargs["disk_cache_budget_bytes"] == budget
    assert kwargs["disk_cache_folder"] == (prompt_cache_dir() if budget else None)
