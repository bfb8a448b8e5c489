"""Speed-up per model in the app: the Models window lists the right draft models, the choice
persists per model, the worker loads the draft (or the model alone with a notice), and the
answer's stats say how much drafting was kept and gained."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from PySide6.QtCore import QSettings

from app.chat.message_view import format_stats
from app.chat.speed_words import speculative_words
from app.models.manager import ModelManager
from app.models.speed_up import LoadOptions, SpeedUp
from app.settings import Settings
from app.worker.worker import WorkerClient, chat_job
from mlx_backend.events import ChatMessage, ChatRequest, Finished, GenerationStats, SamplingParams
from tests.support.checkpoints import write_random_checkpoint
from tests.support.draft_pairs import write_pair

BUDGET = 8 * 2**30
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    return write_pair(tmp_path_factory.mktemp("pair"))  # same tiny tokenizer, draft has fewer layers


def settings_at(folder: Path) -> Settings:
    return Settings(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))


def manager_for(qtbot, settings: Settings) -> ModelManager:
    manager = ModelManager(settings, budget_bytes=BUDGET, confirm=False, installed_models=lambda: [])
    qtbot.addWidget(manager)
    manager.show()
    return manager


def test_the_choice_lists_smaller_models_of_the_same_tokenizer_only(qtbot, tmp_path, pair) -> None:
    draft, target = pair
    bigger = write_random_checkpoint(tmp_path / "bigger", num_hidden_layers=6, seed=3)
    other = write_random_checkpoint(tmp_path / "other-tokenizer", num_hidden_layers=1, seed=4)
    (other / "vocab.json").write_text('{"a": 0, "b": 1}', encoding="utf-8")  # another tokenizer
    settings = settings_at(tmp_path)
    settings.local_models = [str(p) for p in (draft, target, bigger, other)]
    manager = manager_for(qtbot, settings)
    assert manager.rows[str(target)].speed_up.options() == ["Off", "Draft model: draft"]
    assert manager.rows[str(bigger)].speed_up.options() == ["Off", "Draft model: draft", "Draft model: target"]
    assert manager.rows[str(draft)].speed_up.options() == ["Off"]  # nothing smaller drafts for it
    # The built-in choice appears when the loaded model has MTP heads (EngineInfo.has_mtp).
    manager.set_loaded(str(target), SimpleNamespace(has_mtp=True))
    assert manager.rows[str(target)].speed_up.options() == ["Off", "Built-in (MTP)", "Draft model: draft"]


def test_the_choice_persists_per_model_across_restarts(qtbot, tmp_path, pair) -> None:
    draft, target = pair
    settings = settings_at(tmp_path)
    settings.local_models = [str(draft), str(target)]
    manager = manager_for(qtbot, settings)
    changed: list[str] = []
    manager.speedUpChanged.connect(changed.append)
    controls = manager.rows[str(target)].speed_up
    controls.menu.setCurrentIndex(controls.menu.findText("Draft model: draft"))
    manager.rows[str(draft)].speed_up.quote.setChecked(False)
    assert changed == [str(target), str(draft)]
    settings.sync()

    again = settings_at(tmp_path)  # the next launch
    assert again.speed_up(str(target)) == SpeedUp("draft", str(draft), True)
    assert again.speed_up(str(draft)) == SpeedUp("off", "", False)
    reopened = manager_for(qtbot, again)
    assert reopened.rows[str(target)].speed_up.menu.currentText() == "Draft model: draft"
    assert not reopened.rows[str(draft)].speed_up.quote.isChecked()


def _load(qtbot, client: WorkerClient, key: str, options: LoadOptions) -> list[str]:
    notices: list[str] = []
    client.loadNotice.connect(notices.append)
    with qtbot.waitSignal(client.modelLoaded, timeout=TIMEOUT_MS):
        client.load_model(key, options)
    return notices


def _answer(qtbot, client: WorkerClient) -> GenerationStats:
    request = ChatRequest(messages=(ChatMessage("user", "Count with me: one two three four"),),
                          sampling=SamplingParams(temperature=0.0, top_p=1.0, top_k=0), max_tokens=24)
    events: list[object] = []
    handle = client.submit(chat_job(request))
    handle.event.connect(events.append)
    with qtbot.waitSignal(handle.finished, timeout=TIMEOUT_MS):
        pass
    [finished] = [e for e in events if isinstance(e, Finished)]
    return finished.stats


def test_the_worker_loads_the_draft_and_the_stats_line_shows_what_it_did(qtbot, pair) -> None:
    draft, target = pair
    client = WorkerClient(batch_interval_s=0.0, self_check=None)  # the real Engine.load
    try:
        assert _load(qtbot, client, str(target), LoadOptions(draft=str(draft), draft_name="draft")) == []
        stats = _answer(qtbot, client)
        assert stats.speculative == "draft-model" and stats.drafted_tokens > 0
        line = format_stats(dataclasses.asdict(stats), str(target))
        if stats.speculative_fell_back:
            assert "Draft model: slower here, switched off for this answer" in line
        else:
            assert f"Draft model: {stats.accepted_tokens / stats.drafted_tokens:.0%} accepted" in line
    finally:
        assert client.shutdown(5000)


def test_a_bad_draft_loads_the_model_alone_and_says_why(qtbot, tmp_path, pair) -> None:
    _draft, target = pair
    broken = write_random_checkpoint(tmp_path / "broken-draft", num_hidden_layers=1)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")  # found only when the engine loads it
    client = WorkerClient(batch_interval_s=0.0, self_check=None)
    try:
        [notice] = _load(qtbot, client, str(target), LoadOptions(draft=str(broken), draft_name="broken-draft"))
        assert notice.startswith("The draft model broken-draft could not be used, so the model runs without it.")
        assert client.model_info is not None and _answer(qtbot, client).speculative is None
        gone = tmp_path / "gone"  # a draft deleted since it was chosen
        [notice] = _load(qtbot, client, str(target), LoadOptions(draft=str(gone), draft_name="gone"))
        assert "gone is no longer on this Mac" in notice
    finally:
        assert client.shutdown(5000)


def test_changing_the_choice_of_the_model_in_use_reloads_it_with_the_draft(qtbot, tmp_path, pair) -> None:
    from app.chat.store import ConversationStore
    from app.window.main_window import MainWindow

    draft, target = pair
    calls: list[tuple[str, dict]] = []
    loaded = threading.Event()

    def loader(key, progress, **speed_up):
        calls.append((key, speed_up))
        loaded.set()
        return SimpleNamespace(info=SimpleNamespace(name=key), stream=lambda request, cancel: iter(()))

    settings = settings_at(tmp_path)
    settings.local_models = [str(draft), str(target)]
    client = WorkerClient(engine_loader=loader, batch_interval_s=0.0, self_check=None)
    window = MainWindow(ConversationStore(tmp_path / "chats.db"), client, settings,
                        model_manager_factory=lambda parent: ModelManager(
                            parent.settings, parent, budget_bytes=BUDGET, confirm=False, installed_models=lambda: []))
    qtbot.addWidget(window)
    try:
        with qtbot.waitSignal(client.modelLoaded, timeout=TIMEOUT_MS):
            window.load_model(str(target))
        assert calls == [(str(target), {})]
        manager = window.open_model_manager()
        controls = manager.rows[str(target)].speed_up
        with qtbot.waitSignal(client.modelLoaded, timeout=TIMEOUT_MS):
            controls.menu.setCurrentIndex(controls.menu.findText("Draft model: draft"))
        assert calls[-1] == (str(target), {"draft": str(draft)})
        # Quote-aware drafting goes with each request: no reload, the next request says "off".
        manager.rows[str(target)].speed_up.quote.setChecked(False)
        qtbot.wait(50)
        assert len(calls) == 2
        assert window.chat.build_request([]).prompt_lookup == "off"
    finally:
        assert client.shutdown(5000)


@pytest.mark.parametrize("kind, words", [("draft-model", "Draft model"), ("mtp", "MTP"),
                                         ("prompt-lookup", "Quote-aware drafting")])
def test_the_stats_line_in_words(kind, words) -> None:
    stats = GenerationStats(10, 0, 40, 0.1, 100.0, 30.0, 1.0, speculative=kind, drafted_tokens=48,
                            accepted_tokens=34, speculative_speedup=1.62)
    assert speculative_words(dataclasses.asdict(stats)) == f"{words}: 71% accepted, 1.6x faster"
    fell_back = dataclasses.replace(stats, speculative_fell_back=True)
    assert speculative_words(dataclasses.asdict(fell_back)) == f"{words}: slower here, switched off for this answer"
    plain = GenerationStats(10, 0, 40, 0.1, 100.0, 30.0, 1.0)
    assert speculative_words(dataclasses.asdict(plain)) == ""
    assert "accepted" not in format_stats(dataclasses.asdict(plain), "m")
