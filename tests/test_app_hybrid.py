"""The Qwen3.5 family in the app: a hybrid model loaded from a folder chats on the real worker
thread, and the reasoning popup offers exactly what the loaded template takes."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Iterator

import pytest
from PySide6.QtCore import Qt

from app.chat.store import DATABASE_NAME, ConversationStore
from app.settings import Settings
from app.window.main_window import MainWindow
from app.worker.worker import WorkerClient
from mlx_backend.events import AnswerDelta, ChatRequest, Finished, GenerationStats, SamplingParams
from tests.support.hybrid_checkpoints import hybrid_fixtures_available

ARGMAX = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
TOKENS = 8  # per turn: the CPU build decodes a 248K-vocab model at a few tokens a second


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def open_window(qtbot, worker: WorkerClient, data_dir: Path) -> MainWindow:
    window = MainWindow(ConversationStore(data_dir / DATABASE_NAME), worker, Settings())
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.show()
    qtbot.waitExposed(window)
    return window


def send(qtbot, window: MainWindow, text: str, timeout: int = 120_000) -> None:
    window.composer.edit.setFocus()
    qtbot.keyClicks(window.composer.edit, text)
    qtbot.keyClick(window.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=timeout)


def last_assistant(window: MainWindow):
    return [v for v in window.transcript.views if v.role == "assistant"][-1]


# ------------------------------------------------- a real Qwen3.5-shaped model


@pytest.fixture(scope="module", params=["qwen3.5", "qwen3.8"])
def hybrid_folder(request, tmp_path_factory) -> tuple[str, Path]:
    if not hybrid_fixtures_available():
        pytest.skip("the shared Qwen3.5-family fixtures are missing")
    pytest.importorskip("torch")
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    release = request.param
    folder = tmp_path_factory.mktemp(release) / f"Qwen3.5-tiny-{release}"
    return release, write_hybrid_checkpoint(folder, kind="dense", tokenizer=True, release=release)


def test_a_qwen35_family_model_loads_from_a_folder_and_chats_two_turns(qtbot, data_dir, hybrid_folder) -> None:
    release, folder = hybrid_folder
    worker = WorkerClient()  # the app's own loader: Engine.load on the worker thread
    requests: list[ChatRequest] = []
    thinking_seen: list[int] = []  # the thinking part's length at each event the GUI gets

    def short_argmax(context):  # the controller's request, only shorter and repeatable
        request = dataclasses.replace(context.request, sampling=ARGMAX, max_tokens=TOKENS)
        requests.append(request)
        from app.chat.turns import TurnJob
        from app.worker.worker import chat_job

        def watch(handle) -> None:  # connected after the controller's own slot: the view is updated
            handle.event.connect(lambda _event: thinking_seen.append(len(last_assistant(window).thinking.text)))

        return TurnJob(chat_job(request), on_submitted=watch)

    try:
        window = open_window(qtbot, worker, data_dir)
        window.chat.set_job_builder(short_argmax)
        with qtbot.waitSignal(worker.modelLoaded, timeout=120_000):
            window.load_model(str(folder))
        info = worker.model_info
        assert info.model_type == "qwen3_5" and info.thinking_mode == "hybrid"
        assert window.settings.model == str(folder)
        # Qwen3.5 templates have a thinking switch: offered, as for hybrid Qwen3.
        assert window.thinking_toggle.isVisible() and window.thinking_toggle.isChecked()
        assert window.reasoning_button.isVisible() is bool(info.reasoning_efforts or info.can_preserve_thinking)
        assert folder.name in window.status_panel.model_label.text()

        # Turn 1, thinking off: the template closes the think block, so everything is answer.
        window.thinking_toggle.click()
        send(qtbot, window, "Hello there")
        first = last_assistant(window)
        assert requests[-1].enable_thinking is False and requests[-1].reasoning_effort is None
        assert first.answer_text.strip() and not first.thinking.text
        assert first.body.toPlainText().strip()
        conversation = window.chat.conversation_id
        user, answer = window.store.messages(conversation)
        assert (user.role, user.content) == ("user", "Hello there")
        assert answer.status == "complete" and answer.content == first.answer_text
        assert answer.stats["generation_tokens"] == TOKENS and answer.stats["finish_reason"] == "length"

        # Turn 2, thinking on: a random model never closes <think>, so all of it is reasoning,
        # streamed into the thinking part; the first exchange is in the prompt.
        window.thinking_toggle.click()
        thinking_seen.clear()
        send(qtbot, window, "Say it again")
        second = last_assistant(window)
        assert requests[-1].enable_thinking is True
        assert [m.role for m in requests[-1].messages] == ["user", "assistant", "user"]
        assert second.thinking.isVisible() and second.thinking.text.strip()
        growing = sorted(set(thinking_seen) - {0})
        assert len(growing) >= 2 and growing[-1] == len(second.thinking.text)  # it streamed in
        stored = window.store.messages(conversation)
        assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[-1].thinking == second.thinking.text and stored[-1].status == "complete"
        assert stored[-1].stats["prompt_tokens"] > answer.stats["prompt_tokens"]
        assert window.sidebar.titles() == ["Hello there"]
    finally:
        assert worker.shutdown(10000)


# ------------------------------------------------- the reasoning popup, on fake engines


def _info(**fields):
    from mlx_backend.generation.engine import EngineInfo

    return EngineInfo(name="m", model_type="qwen3_5", context_length=262144, yarn_context_length=None,
                      thinking_mode="hybrid", weights_bytes=0, num_layers=4, quantization_bits=None, **fields)


class RecordingEngine:
    """Answers every request with one word and remembers what it was asked."""

    def __init__(self, info) -> None:
        self.info = info
        self.requests: list[ChatRequest] = []
        self.lock = threading.Lock()

    def stream(self, request, cancel) -> Iterator[object]:
        with self.lock:
            self.requests.append(request)
        yield AnswerDelta("Sure.")
        yield Finished("stop", GenerationStats(10, 0, 1, 0.01, 100.0, 10.0, 0.1))


def fresh_engines() -> dict[str, RecordingEngine]:
    # New engines for every test, so a request list never holds an earlier test's requests.
    return {
        "qwen3.8": RecordingEngine(_info(reasoning_efforts=("xhigh", "medium", "low"), can_preserve_thinking=True,
                                         preserves_thinking_by_default=True)),
        "qwen3.6": RecordingEngine(_info(can_preserve_thinking=True)),
        "qwen3.5": RecordingEngine(_info()),
        "qwen3.5-small": RecordingEngine(_info(thinks_by_default=False)),  # answers directly by default
    }


@pytest.fixture
def fake_worker(qapp):
    engines = fresh_engines()
    worker = WorkerClient(engine_loader=lambda key, progress: engines[key])
    worker.test_engines = engines
    yield worker
    assert worker.shutdown(5000)


def load(qtbot, worker: WorkerClient, key: str) -> RecordingEngine:
    with qtbot.waitSignal(worker.modelLoaded, timeout=5000):
        worker.load_model(key)
    return worker.test_engines[key]


def test_the_effort_choice_is_offered_for_a_template_with_levels_and_reaches_the_request(
    qtbot, data_dir, fake_worker
) -> None:
    window = open_window(qtbot, fake_worker, data_dir)
    assert not window.reasoning_button.isVisible()  # no model yet
    engine = load(qtbot, fake_worker, "qwen3.8")
    button = window.reasoning_button
    assert button.isVisible() and button.text().startswith("Effort: High")  # the default, first level
    assert list(button.effort_actions) == ["xhigh", "medium", "low"]
    assert [a.text() for a in button.effort_actions.values()] == ["High", "Medium", "Low"]
    assert button.effort_actions["xhigh"].isChecked()

    send(qtbot, window, "Untouched")
    assert engine.requests[-1].reasoning_effort is None  # never chosen: the template's default
    assert engine.requests[-1].preserve_thinking is None

    button.effort_actions["medium"].trigger()
    button.history_actions["drop"].trigger()
    assert button.text().startswith("Effort: Medium") and button.effort_actions["medium"].isChecked()
    send(qtbot, window, "Think less")
    assert engine.requests[-1].reasoning_effort == "medium"
    assert engine.requests[-1].preserve_thinking is False

    # Persisted: a fresh Settings reads the choices back, and a new window shows them.
    fresh = Settings()
    assert (fresh.reasoning_effort, fresh.history_reasoning) == ("medium", "drop")
    again = open_window(qtbot, fake_worker, data_dir)
    assert again.reasoning_button.text().startswith("Effort: Medium")
    assert again.reasoning_button.history_actions["drop"].isChecked()

    # Thinking off: no effort asked (greyed out, not hidden); back on, it returns.
    window.thinking_toggle.click()
    assert button.isVisible() and not button.effort_actions["low"].isEnabled()
    send(qtbot, window, "No thinking")
    assert engine.requests[-1].enable_thinking is False and engine.requests[-1].reasoning_effort is None
    window.thinking_toggle.click()
    button.effort_actions["low"].trigger()
    send(qtbot, window, "Quick thought")
    assert engine.requests[-1].reasoning_effort == "low"


def test_without_levels_there_is_no_effort_control_and_no_effort_is_sent(qtbot, data_dir, fake_worker) -> None:
    settings = Settings()
    settings.reasoning_effort, settings.history_reasoning = "medium", "keep"  # chosen for another model
    window = open_window(qtbot, fake_worker, data_dir)
    button = window.reasoning_button

    engine = load(qtbot, fake_worker, "qwen3.5")  # neither effort nor preserve_thinking
    assert not button.isVisible() and not button.effort_actions and not button.history_actions
    send(qtbot, window, "Hi")
    assert (engine.requests[-1].reasoning_effort, engine.requests[-1].preserve_thinking) == (None, None)

    engine = load(qtbot, fake_worker, "qwen3.6")  # preserve_thinking only
    assert button.isVisible() and not button.effort_actions and button.text().startswith("Reasoning")
    assert button.history_actions["keep"].isChecked()
    assert button.history_actions["default"].text() == "Model\u2019s Default (Drop)"  # Qwen3.6 drops
    window.new_chat()
    send(qtbot, window, "Hi again")
    assert (engine.requests[-1].reasoning_effort, engine.requests[-1].preserve_thinking) == (None, True)

    engine = load(qtbot, fake_worker, "qwen3.8")  # the stored level applies where it exists
    assert button.text().startswith("Effort: Medium")
    assert button.history_actions["default"].text() == "Model\u2019s Default (Keep)"  # Qwen3.8 keeps
    window.new_chat()
    send(qtbot, window, "And now")
    assert (engine.requests[-1].reasoning_effort, engine.requests[-1].preserve_thinking) == ("medium", True)


def test_until_the_user_flips_thinking_each_model_follows_its_own_default(qtbot, data_dir, fake_worker) -> None:
    window = open_window(qtbot, fake_worker, data_dir)
    engine = load(qtbot, fake_worker, "qwen3.5-small")
    assert window.thinking_toggle.isVisible() and not window.thinking_toggle.isChecked()
    send(qtbot, window, "Hi")
    assert len(engine.requests) == 1 and engine.requests[-1].enable_thinking is None  # the template decides
    assert Settings().thinking_choice is None  # showing the default saved nothing

    engine = load(qtbot, fake_worker, "qwen3.5")  # thinks by default: the toggle follows
    assert window.thinking_toggle.isChecked()

    window.thinking_toggle.click()  # the user's choice now applies to every model
    assert Settings().thinking_choice is False
    engine = load(qtbot, fake_worker, "qwen3.5-small")
    window.new_chat()
    window.thinking_toggle.click()
    send(qtbot, window, "Think, please")
    assert engine.requests[-1].enable_thinking is True


def test_a_failed_load_hides_the_previous_models_switches(qtbot, data_dir, fake_worker) -> None:
    window = open_window(qtbot, fake_worker, data_dir)
    load(qtbot, fake_worker, "qwen3.8")
    assert window.reasoning_button.isVisible() and window.thinking_toggle.isVisible()
    with qtbot.waitSignal(fake_worker.modelLoadFailed, timeout=5000):
        fake_worker.load_model("no-such-model")
    assert not window.reasoning_button.isVisible() and not window.thinking_toggle.isVisible()


def test_the_reasoning_choices_are_in_the_model_menu_too(qtbot, data_dir, fake_worker) -> None:
    window = open_window(qtbot, fake_worker, data_dir)
    submenu = window.reasoning_button.menu()
    model_menu = submenu.menuAction().associatedObjects()
    assert any(getattr(menu, "title", lambda: "")() == "&Model" for menu in model_menu)
    assert not submenu.menuAction().isVisible()  # no model: nothing to offer
    engine = load(qtbot, fake_worker, "qwen3.8")
    assert submenu.menuAction().isVisible() and submenu.title() == "Reasoning"
    window.reasoning_button.effort_actions["low"].trigger()  # the same actions as the popup
    send(qtbot, window, "Hi")
    assert engine.requests[-1].reasoning_effort == "low"
    load(qtbot, fake_worker, "qwen3.5")
    assert not submenu.menuAction().isVisible()
