"""Tools in the window, end to end: a real worker thread, the real engine over a random-weight
model whose replies are scripted to call tools, and a real MCP server written with the SDK.

Approval (Allow Once / Always Allow / Deny), the call's block in the transcript, the model's
continuation, the step limit, Stop while waiting for approval and while a tool runs, a hanging
and a crashing server, and a restart on the same database with the follow-up's prompt."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtWidgets import QLabel

from app.chat.store import DATABASE_NAME, MIGRATIONS, ConversationStore
from app.settings import Settings
from app.tools.attach import attach_tools
from app.tools.block import ToolBlock
from app.tools.service import ToolService
from app.window.main_window import MainWindow
from app.worker.worker import WorkerClient
from mlx_backend.loading.loader import load
from tests.support.mcp_servers import stdio_entry
from tests.support.scripted_model import ScriptedModel

JSON_CALL = '<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
XML_ADD = "<tool_call>\n<function=add>\n<parameter=a>\n2\n</parameter>\n<parameter=b>\n3\n</parameter>\n</function>\n</tool_call>"


def call(name: str, **arguments) -> str:
    return JSON_CALL.format(name=name, args=json.dumps(arguments))


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    return load(write_random_checkpoint(tmp_path_factory.mktemp("apptools-qwen3"), tokenizer="qwen3", max_position_embeddings=4096))


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path) -> Path:
    path = data_dir / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"toolbox": stdio_entry()}}))
    return path


class Rig:
    """A worker serving a scripted model; windows opened on one data folder share one service."""

    def __init__(self, qtbot, loaded, data_dir: Path, config: Path) -> None:
        from mlx_backend import Engine

        self.qtbot, self.data_dir = qtbot, data_dir
        self.model, self.tokenizer = loaded
        self.scripted: ScriptedModel | None = None
        self.worker = WorkerClient(engine_loader=lambda path, progress: Engine(self.scripted, self.tokenizer, name="scripted"))
        self.service = ToolService(config, call_timeout_s=3.0, start_timeout_s=20.0)
        self.windows: list[MainWindow] = []

    def script(self, *replies: str) -> None:
        self.scripted = ScriptedModel(self.model, self.tokenizer, list(replies))
        loaded = threading.Event()
        self.worker.modelLoaded.connect(lambda info: loaded.set())
        self.worker.load_model("scripted")
        self.qtbot.waitUntil(loaded.is_set, timeout=30000)

    def open_window(self, *, tools_on: bool = True) -> MainWindow:
        store = ConversationStore(self.data_dir / DATABASE_NAME)
        settings = Settings()
        settings.tools_enabled = tools_on
        window = MainWindow(store, self.worker, settings)
        attach_tools(window, settings, self.service)
        self.qtbot.addWidget(window)
        window.resize(900, 700)
        window.show()
        self.windows.append(window)
        return window

    def prompt(self, number: int) -> str:
        assert self.scripted is not None
        return self.tokenizer._hf.decode(self.scripted.prompts[number])

    def close(self) -> None:
        for window in self.windows:
            window.close()
            window.store.close()
        assert self.worker.shutdown(10000)
        self.service.close()


@pytest.fixture
def rig(qtbot, qwen3, data_dir, config):
    rig = Rig(qtbot, qwen3, data_dir, config)
    yield rig
    rig.close()


def answer_view(window: MainWindow):
    return [v for v in window.transcript.views if v.role == "assistant"][-1]


def blocks(window: MainWindow) -> list[ToolBlock]:
    return [w for w in answer_view(window).tool_widgets() if isinstance(w, ToolBlock)]


def dialog_of(qtbot, window: MainWindow, timeout: int = 30000):
    qtbot.waitUntil(lambda: window.tools.broker.dialog is not None and window.tools.broker.dialog.isVisible(), timeout=timeout)
    return window.tools.broker.dialog


def wait_idle(qtbot, window: MainWindow, timeout: int = 30000) -> None:
    qtbot.waitUntil(lambda: not window.chat.generating, timeout=timeout)


def test_allow_once_runs_the_call_its_result_shows_and_the_model_continues(qtbot, rig) -> None:
    rig.script(call("add", a=2, b=3), "The sum is 5.")
    window = rig.open_window()
    window.chat.send("What is 2 + 3?")
    dialog = dialog_of(qtbot, window)
    # The exact arguments, the tool and its server.
    assert json.loads(dialog.arguments.toPlainText()) == {"a": 2, "b": 3}
    labels = " ".join(label.text() for label in dialog.findChildren(QLabel))
    assert "\u201cadd\u201d" in labels and "\u201ctoolbox\u201d" in labels
    assert [b.text() for b in (dialog.once_button, dialog.always_button, dialog.deny_button)] == [
        "Allow Once", "Always Allow \u201cadd\u201d", "Deny"]
    qtbot.waitUntil(lambda: bool(blocks(window)) and blocks(window)[0].record.status == "waiting")
    dialog.once_button.click()
    wait_idle(qtbot, window)
    [block] = blocks(window)
    assert block.record.status == "done" and block.record.result == "5" and block.record.server == "toolbox"
    assert "Done" in block.header.text() and "add" in block.header.text()
    view = answer_view(window)
    assert view.answer_text == "The sum is 5."
    # The result went back to the model as a tool message in the next step's prompt.
    assert "<tool_response>\n5\n</tool_response>" in rig.prompt(1)
    stored = window.store.tool_calls(window.chat.conversation_id)
    assert [(c.name, c.arguments, c.result, c.status) for c in stored[view.message_id]] == [("add", {"a": 2, "b": 3}, "5", "done")]
    assert window.store.message(view.message_id).status == "complete"


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint
    from tests.support.paths import SHARED_FIXTURES

    if not (SHARED_FIXTURES / "qwen3.5-family").is_dir():
        pytest.skip("the shared Qwen3.5 fixtures are missing")
    return load(write_hybrid_checkpoint(tmp_path_factory.mktemp("apptools-qwen35"), kind="dense", tokenizer=True, release="qwen3.5"))


def test_a_qwen35_xml_call_is_approved_run_and_answered(qtbot, qwen35, data_dir, config) -> None:
    rig = Rig(qtbot, qwen35, data_dir, config)
    try:
        rig.script(XML_ADD, "Five.")
        Settings().thinking_enabled = False  # the scripted reply is the answer, not a think block
        window = rig.open_window()
        window.chat.send("What is 2 + 3?")
        dialog = dialog_of(qtbot, window, timeout=60000)
        assert json.loads(dialog.arguments.toPlainText()) == {"a": 2, "b": 3}
        dialog.once_button.click()
        wait_idle(qtbot, window, timeout=60000)
        [block] = blocks(window)
        assert (block.record.status, block.record.result) == ("done", "5")
        assert answer_view(window).answer_text == "Five."
        assert "<tool_response>\n5\n</tool_response>" in rig.prompt(1)
    finally:
        rig.close()


def test_always_allow_skips_the_dialog_next_time_and_is_remembered(qtbot, rig) -> None:
    rig.script(call("echo", text="one"), "First.", call("echo", text="two"), "Second.")
    window = rig.open_window()
    window.chat.send("Echo one")
    dialog_of(qtbot, window).always_button.click()
    wait_idle(qtbot, window)
    assert Settings().tool_permissions == {"toolbox/echo": "always"}  # stored, so a restart keeps it
    shown: list[object] = []
    window.tools.broker.dialogShown.connect(lambda *a: shown.append(a))
    window.chat.send("Echo two")
    wait_idle(qtbot, window)
    assert shown == []
    assert [b.record.result for b in blocks(window)] == ["echo: two"]
    assert answer_view(window).answer_text == "Second."


def test_deny_reports_denied_to_the_model_and_shows_denied(qtbot, rig) -> None:
    rig.script(call("add", a=1, b=1), "Alright, I won't.")
    window = rig.open_window()
    window.chat.send("Add 1 and 1")
    dialog = dialog_of(qtbot, window)
    dialog.reject()  # what Esc does
    wait_idle(qtbot, window)
    [block] = blocks(window)
    assert block.record.status == "denied" and "Denied" in block.header.text()
    assert "The user denied this tool call." in rig.prompt(1)
    assert answer_view(window).answer_text == "Alright, I won't."


def test_the_step_limit_is_honoured_and_shown(qtbot, rig) -> None:
    rig.script(*[call("echo", text=str(n)) for n in range(5)])
    window = rig.open_window()
    window.tools.settings.tool_step_limit = 2
    window.tools.settings.set_tool_permission("toolbox", "echo", "always")
    window.chat.send("Loop")
    wait_idle(qtbot, window)
    assert [b.record.result for b in blocks(window)] == ["echo: 0", "echo: 1"]
    notes = [w for w in answer_view(window).tool_widgets() if not isinstance(w, ToolBlock)]
    assert [n.text() for n in notes] == ["Stopped after 2 tool steps (the limit is in Settings \u203a Tools)."]
    assert len(rig.scripted.prompts) == 3  # two steps with calls ran, then the third step's calls did not


def test_stop_while_waiting_for_approval_ends_at_once(qtbot, rig) -> None:
    rig.script(call("add", a=2, b=3), "never reached")
    window = rig.open_window()
    window.chat.send("What is 2 + 3?")
    dialog_of(qtbot, window)
    started = time.monotonic()
    window.chat.stop()
    wait_idle(qtbot, window, timeout=3000)
    assert time.monotonic() - started < 2.0
    assert window.tools.broker.dialog is None
    [block] = blocks(window)
    assert block.record.status == "denied"
    assert window.store.message(answer_view(window).message_id).status == "interrupted"
    assert len(rig.scripted.prompts) == 1  # the model was not asked to continue


def test_stop_while_a_tool_runs_ends_at_once(qtbot, rig) -> None:
    rig.service.call_timeout_s = 60.0
    rig.script(call("hang", seconds=30), "never reached")
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "hang", "always")
    window.chat.send("Hang")
    qtbot.waitUntil(lambda: bool(blocks(window)) and blocks(window)[0].record.status == "running", timeout=30000)
    time.sleep(0.5)
    started = time.monotonic()
    window.chat.stop()
    wait_idle(qtbot, window, timeout=3000)
    assert time.monotonic() - started < 2.0
    assert blocks(window)[0].record.status == "error" and "Stopped" in blocks(window)[0].record.result
    assert window.store.message(answer_view(window).message_id).status == "interrupted"


def test_a_hanging_tool_times_out_with_a_clear_error_and_the_chat_stays_usable(qtbot, rig) -> None:
    rig.script(call("hang", seconds=30), "It took too long.", "Hello again.")
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "hang", "always")
    window.chat.send("Hang")
    wait_idle(qtbot, window, timeout=40000)
    [block] = blocks(window)
    assert block.record.status == "error" and "Error" in block.header.text()
    assert "3" in block.record.result and "hang" in block.record.result  # the timeout and the tool, in words
    assert answer_view(window).answer_text == "It took too long."
    window.chat.send("Still there?")
    wait_idle(qtbot, window)
    assert answer_view(window).answer_text == "Hello again."


def test_a_crashing_server_gives_a_clear_error_with_its_stderr(qtbot, rig) -> None:
    rig.script(call("crash"), "The server crashed.")
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "crash", "always")
    window.chat.send("Crash")
    wait_idle(qtbot, window)
    [block] = blocks(window)
    assert block.record.status == "error"
    assert 'MCP server "toolbox" stopped' in block.record.result and "about to crash on purpose" in block.record.result
    assert answer_view(window).answer_text == "The server crashed."


def test_the_conversation_and_its_tool_blocks_survive_a_restart(qtbot, rig) -> None:
    rig.script("One moment." + call("pixel"), "Here is a pixel.", "Yes, I showed it.")
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "pixel", "always")
    window.chat.send("Show me a pixel")
    wait_idle(qtbot, window)
    conversation = window.chat.conversation_id
    assert blocks(window)[0].record.images
    window.close()
    window.store.close()
    rig.windows.remove(window)

    again = rig.open_window()
    again.chat.open_conversation(conversation)
    [block] = blocks(again)
    assert block.record.name == "pixel" and block.record.status == "done"
    [(mime, data)] = block.record.images
    assert mime == "image/png" and data.startswith(b"\x89PNG")
    label = block.images.layout().itemAt(0).widget()
    assert label.pixmap() is not None and not label.pixmap().isNull()
    assert block.details.isHidden()  # collapsed until clicked
    block.header.click()
    assert not block.details.isHidden() and block.arguments.toPlainText() == "{}"
    shown = answer_view(again).answer_text
    assert shown.startswith("One moment.") and shown.endswith("\n\nHere is a pixel.")  # each step its own paragraph
    again.chat.send("Did you show it?")
    wait_idle(qtbot, again)
    # The follow-up's prompt is the earlier turn as the loop sent it: call, result, answer.
    follow_up = rig.prompt(2)
    assert '"name": "pixel"' in follow_up and "<tool_response>" in follow_up and "Here is a pixel." in follow_up
    # ... and it extends the prompt the model saw at the step after the call (the cache is reused).
    assert follow_up.startswith(rig.prompt(1).rsplit("<|im_start|>assistant", 1)[0])


def test_tools_off_means_a_plain_chat_with_no_tools_offered(qtbot, rig) -> None:
    rig.script(call("add", a=2, b=3))
    window = rig.open_window(tools_on=False)
    window.chat.send("What is 2 + 3?")
    wait_idle(qtbot, window)
    assert blocks(window) == [] and "<tools>" not in rig.prompt(0)
    assert rig.service.current_hub() is None  # no server was started


def test_an_old_database_migrates_and_keeps_every_conversation(tmp_path) -> None:
    path = tmp_path / DATABASE_NAME
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (2)")
    for migration in MIGRATIONS[:2]:
        migration(db)
    db.execute("INSERT INTO conversations VALUES ('c1', 'Old chat', 1, 1, NULL)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', 'user', 'hi', 1)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created_at) VALUES ('c1', 'assistant', 'hello', 2)")
    db.close()
    store = ConversationStore(path)
    assert store.schema_version == len(MIGRATIONS) >= 3
    assert [c.title for c in store.conversations()] == ["Old chat"]
    assert [(m.role, m.content) for m in store.messages("c1")] == [("user", "hi"), ("assistant", "hello")]
    assert store.tool_calls("c1") == {}
    store.close()


def test_the_tools_section_lists_servers_tools_errors_and_imports_claude_desktop(qtbot, data_dir, config, tmp_path) -> None:
    from app.tools.settings_section import ToolsSection

    config.write_text(json.dumps({"mcpServers": {
        "toolbox": stdio_entry(),
        "broken": {"command": "definitely-not-a-command-qwen-desk"},
    }}))
    service = ToolService(config, start_timeout_s=20.0)
    settings = Settings()
    section = ToolsSection(settings, service)
    qtbot.addWidget(section)
    try:
        names = [section.tree.topLevelItem(i).text(0) for i in range(section.tree.topLevelItemCount())]
        assert names == ["toolbox", "broken"] and service.current_hub() is None  # nothing started to show them
        section.list_tools()
        qtbot.waitUntil(lambda: section.list_button.isEnabled(), timeout=40000)
        toolbox, broken = (section.tree.topLevelItem(i) for i in range(2))
        tools = {toolbox.child(i).text(0) for i in range(toolbox.childCount())}
        assert {"add", "echo", "hang", "crash"} <= tools
        assert "Add two integers." in toolbox.child([toolbox.child(i).text(0) for i in range(toolbox.childCount())].index("add")).toolTip(0)
        holder = section.tree.itemWidget(broken, 1)
        assert holder is not None and "failed" in holder.findChild(QLabel).text()
        assert "definitely-not-a-command-qwen-desk" in holder.findChild(QLabel).text()
        log = section.show_log("broken", "boom")
        assert log.isVisible()
        log.close()
        add = [toolbox.child(i) for i in range(toolbox.childCount()) if toolbox.child(i).text(0) == "add"][0]
        combo = section.tree.itemWidget(add, 1)
        combo.setCurrentIndex(combo.findData("never"))
        assert Settings().tool_permissions == {"toolbox/add": "never"}
        section.steps_spin.setValue(3)
        section.enabled_check.setChecked(True)
        assert (Settings().tool_step_limit, Settings().tools_enabled) == (3, True)
        claude = tmp_path / "claude_desktop_config.json"
        claude.write_text(json.dumps({"mcpServers": {"files": {"command": "npx", "args": ["server-filesystem"]}}}))
        import mlx_backend.tools.mcp.config as mcp_config

        original = mcp_config.claude_desktop_config_path
        mcp_config.claude_desktop_config_path = lambda: claude
        try:
            section.import_claude()
        finally:
            mcp_config.claude_desktop_config_path = original
        assert "files" in section.status.text() and section.tree.topLevelItem(2).text(0) == "files"
        assert "files" in json.loads(config.read_text())["mcpServers"]
    finally:
        service.close()


def test_a_tool_set_to_never_is_denied_without_asking(qtbot, rig) -> None:
    rig.script(call("add", a=4, b=4), "Understood.")
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "add", "never")
    shown: list[object] = []
    window.tools.broker.dialogShown.connect(lambda *a: shown.append(a))
    window.chat.send("Add 4 and 4")
    wait_idle(qtbot, window)
    assert shown == [] and blocks(window)[0].record.status == "denied"
    assert "The user denied this tool call." in rig.prompt(1)


def test_a_broken_mcp_json_says_why_and_the_chat_still_answers(qtbot, rig, config) -> None:
    config.write_text('{"mcpServers": {"toolbox": ')  # cut off mid-file
    rig.script("Plain answer.")
    window = rig.open_window()
    window.chat.send("Hello")
    wait_idle(qtbot, window)
    view = answer_view(window)
    assert view.answer_text == "Plain answer." and "<tools>" not in rig.prompt(0)
    [note] = view.tool_widgets()
    assert note.text().startswith("Tools are unavailable for this answer:") and "mcp.json" in note.text()


def test_thinking_between_steps_is_kept_for_the_next_step_and_stored(qtbot, rig) -> None:
    rig.script("<think>\nI should add them.\n</think>\n\n" + call("add", a=2, b=3), "<think>\nGot 5.\n</think>\n\nIt is 5.")
    Settings().thinking_enabled = True
    window = rig.open_window()
    window.tools.settings.set_tool_permission("toolbox", "add", "always")
    window.chat.send("What is 2 + 3?")
    wait_idle(qtbot, window)
    view = answer_view(window)
    assert "I should add them." in view.thinking_text and "Got 5." in view.thinking_text
    assert view.answer_text == "It is 5."
    # The Qwen3 template keeps reasoning after the last user message: the next step sees it.
    assert "I should add them." in rig.prompt(1)
    [record] = window.store.tool_calls(window.chat.conversation_id)[view.message_id]
    assert "I should add them." in record.step_thinking and "Got 5." not in record.step_thinking


def test_switching_chats_while_a_call_waits_keeps_its_block_live(qtbot, rig) -> None:
    # A review found the blocks of a running turn deleted with the transcript on a chat switch.
    rig.script(call("add", a=2, b=3), "The sum is 5.")
    window = rig.open_window()
    window.chat.send("What is 2 + 3?")
    dialog = dialog_of(qtbot, window)
    qtbot.waitUntil(lambda: bool(blocks(window)) and blocks(window)[0].record.status == "waiting")
    conversation = window.chat.conversation_id
    window.chat.new_conversation()
    window.chat.open_conversation(conversation)
    [block] = blocks(window)  # one live block again, not a stale copy beside a new one
    assert block.record.status == "waiting"
    dialog.once_button.click()
    wait_idle(qtbot, window)
    [block] = blocks(window)
    assert block.record.status == "done" and block.record.result == "5"
