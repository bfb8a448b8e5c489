"""Chat Settings (Cmd+;): one chat's system prompt, sampling, answer length and context reach
the engine's request, survive a restart, and "Use Defaults" gives the chat back to the app's
settings. The model behind each answer is recorded and shown."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from app.chat.chat_settings import LONG_CONTEXT_YARN_FACTOR, ChatDefaults, ChatSettings, greedy_warning
from app.chat.settings_panel import ChatSettingsDialog
from mlx_backend.events import SamplingParams
from tests.support.chat_window import ChatWindow
from tests.support.checkpoints import write_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("chat-settings"), max_position_embeddings=1024)


@pytest.fixture
def launch(qtbot, tmp_path, checkpoint):
    made: list[ChatWindow] = []

    def make(**kwargs) -> ChatWindow:
        if made:
            made[-1].close()
        made.append(ChatWindow(qtbot, tmp_path, checkpoint, **kwargs))
        made[-1].settings.thinking_enabled = False
        return made[-1]

    yield make
    made[-1].close()


def open_panel(app: ChatWindow) -> ChatSettingsDialog:
    app.window.menus.chat_settings_action.trigger()
    dialog = app.window._chat_settings_dialog
    assert dialog is not None and dialog.isVisible()
    return dialog


def save(dialog: ChatSettingsDialog) -> None:
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Save).click()


def test_chat_settings_reach_the_request_and_survive_a_restart(launch):
    app = launch()
    app.settings.system_prompt = "Be brief."
    app.send("Hello")
    plain = app.recorder.requests[-1]
    assert plain.messages[0].content == "Be brief." and plain.sampling is None
    assert plain.max_tokens == 8192 and plain.yarn_factor is None

    dialog = open_panel(app)
    # The panel opens on what the chat uses now: Qwen's values without thinking.
    assert not dialog.advanced.isVisible()
    dialog.advanced_toggle.click()
    assert dialog.advanced.isVisible()
    assert (dialog.temperature.value(), dialog.top_p.value(), dialog.top_k.value()) == (0.7, 0.8, 20)
    assert dialog.max_tokens.value() == 8192 and dialog.context.currentIndex() == 0
    assert "Be brief." in dialog.system_prompt.placeholderText()
    dialog.system_prompt.setPlainText("You are a pirate.")
    dialog.temperature.setValue(0.3)
    dialog.top_k.setValue(5)
    dialog.max_tokens.setValue(300)
    assert dialog.context.model().item(1).isEnabled()  # this model has a YaRN recipe
    dialog.context.setCurrentIndex(1)
    save(dialog)
    assert app.window.chat_settings_button.text().endswith("\u2022")

    app.send("Ahoy?")
    request = app.recorder.requests[-1]
    assert request.messages[0].content == "You are a pirate."
    assert request.sampling == SamplingParams(temperature=0.3, top_p=0.8, top_k=5)  # top-p: Qwen's
    assert request.max_tokens == 300 and request.yarn_factor == LONG_CONTEXT_YARN_FACTOR
    conversation = app.chat.conversation_id

    # Another chat keeps the app's settings.
    app.window.new_chat()
    assert not app.window.chat_settings_button.text().endswith("\u2022")
    app.send("Different chat")
    other = app.recorder.requests[-1]
    assert other.messages[0].content == "Be brief." and other.sampling is None and other.max_tokens == 8192

    again = launch()
    again.chat.open_conversation(conversation)
    again.send("Still a pirate?")
    request = again.recorder.requests[-1]
    assert request.messages[0].content == "You are a pirate."
    assert (request.sampling.temperature, request.sampling.top_k, request.max_tokens) == (0.3, 5, 300)
    dialog = open_panel(again)
    assert dialog.advanced.isVisible()  # the chat has advanced values of its own
    assert dialog.system_prompt.toPlainText() == "You are a pirate." and dialog.temperature.value() == 0.3
    assert dialog.max_tokens.value() == 300 and dialog.context.currentIndex() == 1

    dialog.reset_button.click()
    assert dialog.temperature.value() == 0.7 and dialog.system_prompt.toPlainText() == ""
    save(dialog)
    again.send("And now?")
    request = again.recorder.requests[-1]
    assert request.messages[0].content == "Be brief." and request.sampling is None
    assert request.max_tokens == 8192 and request.yarn_factor is None
    assert again.store.conversation(conversation).settings == {}


def test_settings_chosen_for_a_new_chat_go_with_its_first_message(launch):
    app = launch()
    dialog = open_panel(app)
    assert dialog.model_label.text() == "No answers in this chat yet."
    dialog.advanced_toggle.click()
    dialog.top_p.setValue(0.5)
    save(dialog)
    app.send("First message")
    assert app.recorder.requests[-1].sampling == SamplingParams(temperature=0.7, top_p=0.5, top_k=20)
    assert ChatSettings.from_json(app.store.conversation(app.chat.conversation_id).settings) == ChatSettings(top_p=0.5)


def test_the_model_that_answered_is_recorded_and_shown(launch):
    app = launch()
    app.send("Who are you?")
    answer = app.messages()[-1]
    model = app.worker.model_name
    assert model and answer.model == model
    assert app.store.conversation(app.chat.conversation_id).model == model
    view = app.assistant_views()[-1]
    assert view.stats_label.text().startswith(Path(model).name)
    assert model in view.stats_label.toolTip()
    assert open_panel(app).model_label.text() == f"Answered by {Path(model).name}"
    conversation = app.chat.conversation_id

    again = launch()
    again.chat.open_conversation(conversation)
    assert again.assistant_views()[-1].stats_label.text().startswith(Path(model).name)


def defaults(thinking: bool) -> ChatDefaults:
    from mlx_backend.generation.sampling import preset_for

    return ChatDefaults(system_prompt="", sampling=preset_for(thinking), thinking=thinking, recommended=True,
                        max_tokens=8192, native_context=32768, long_context=None)


def test_defaults_are_qwens_never_greedy_and_zero_warns(qtbot):
    thinking = ChatSettingsDialog(ChatSettings(), defaults(True))
    qtbot.addWidget(thinking)
    assert (thinking.temperature.value(), thinking.top_p.value(), thinking.top_k.value()) == (0.6, 0.95, 20)
    assert "recommended values thinking" in thinking.recommendation.text()
    plain = ChatSettingsDialog(ChatSettings(), defaults(False))
    qtbot.addWidget(plain)
    assert (plain.temperature.value(), plain.top_p.value(), plain.top_k.value()) == (0.7, 0.8, 20)
    # Defaults are not the chat's own: left alone, the chat follows the mode.
    assert plain.settings() == ChatSettings()
    assert plain.greedy.isHidden()
    plain.temperature.setValue(0.0)
    assert not plain.greedy.isHidden() and "repeat" in plain.greedy.text()
    assert plain.settings() == ChatSettings(temperature=0.0)
    # No published YaRN recipe: long context can't be chosen.
    assert not plain.context.model().item(1).isEnabled()
    assert greedy_warning(0.6) == "" and greedy_warning(None) == ""


def test_stored_settings_are_read_leniently_and_yarn_matches_the_engine():
    from mlx_backend.models.limits import DEFAULT_YARN_FACTOR

    assert LONG_CONTEXT_YARN_FACTOR == DEFAULT_YARN_FACTOR
    chat = ChatSettings(system_prompt="Hi", temperature=0.2, top_k=3, max_tokens=99, long_context=True)
    assert ChatSettings.from_json(chat.to_json()) == chat
    assert ChatSettings.from_json({"temperature": "hot", "top_k": True, "max_tokens": 12.0}) == ChatSettings(max_tokens=12)
    assert ChatSettings.from_json(None) == ChatSettings() and ChatSettings().to_json() == {}
