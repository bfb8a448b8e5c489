"""File > Export Chat as Markdown, and the sidebar's date sections."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence

from app.chat.date_groups import date_group
from app.chat.export import conversation_markdown, suggested_filename
from app.chat.store import DATABASE_NAME, Attachment, ConversationStore
from app.settings import Settings
from app.window.main_window import MainWindow
from app.worker.worker import WorkerClient

ANSWER = (
    "Here:\n\n```python\ndef f(x):\n    return x * 2  # doubled\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\nMath: $a\\,b \\\\ c_1*d_2*$"
)
THINKING = "The user wants code.\n\nA closing tag </details> in the reasoning must not end the block."


@pytest.fixture
def store(tmp_path: Path) -> ConversationStore:
    store = ConversationStore(tmp_path / DATABASE_NAME)
    yield store
    store.close()


def _chat(store: ConversationStore) -> str:
    conversation = store.create_conversation("Double it: a/b?", model="mlx-community/Qwen3-8B-4bit")
    store.add_message(conversation.id, "user", "Write f", attachments=[Attachment(name="notes.pdf", path="/x/notes.pdf")])
    store.add_message(conversation.id, "assistant", ANSWER, thinking=THINKING)
    store.add_message(conversation.id, "user", "Again")
    store.add_message(conversation.id, "assistant", "Partial", status="interrupted")
    return conversation.id


def test_the_export_is_the_chat_in_markdown_with_reasoning_folded(store: ConversationStore) -> None:
    conversation_id = _chat(store)
    when = dt.datetime(2026, 3, 4, 5, 6).timestamp()
    text = conversation_markdown(store.conversation(conversation_id), store.messages(conversation_id), exported_at=when)
    escaped = THINKING.replace("</details>", "&lt;/details&gt;")
    assert text == (
        "# Double it: a/b?\n\n"
        "_Exported from Qwen Desk on 2026-03-04 05:06, model: mlx-community/Qwen3-8B-4bit_\n\n"
        "## You\n\n- Attached: `notes.pdf`\n\nWrite f\n\n"
        f"## Assistant\n\n<details>\n<summary>Reasoning</summary>\n\n{escaped}\n\n</details>\n\n{ANSWER}\n\n"
        "## You\n\nAgain\n\n"
        "## Assistant\n\nPartial\n\n_(stopped before the end)_\n"
    )
    # The answer's code block, table and LaTeX are there byte for byte.
    assert ANSWER in text


def test_reasoning_can_be_left_out(store: ConversationStore) -> None:
    conversation_id = _chat(store)
    text = conversation_markdown(store.conversation(conversation_id), store.messages(conversation_id),
                                 include_reasoning=False)
    assert "<details>" not in text and "The user wants code" not in text
    assert ANSWER in text


def test_suggested_file_names_are_safe() -> None:
    assert suggested_filename("Double it: a/b?") == "Double it a b.md"
    assert suggested_filename("../..") == "Chat.md"


def _window(qtbot, tmp_path: Path, monkeypatch) -> MainWindow:
    monkeypatch.setenv("QWEN_DESK_DATA_DIR", str(tmp_path / "data"))
    client = WorkerClient(engine_loader=lambda path, progress: None)
    window = MainWindow(ConversationStore(tmp_path / "data" / DATABASE_NAME), client, Settings())
    qtbot.addWidget(window)
    window.show()
    return window


def test_file_menu_exports_the_open_chat_to_the_chosen_file(qtbot, tmp_path: Path, monkeypatch) -> None:
    window = _window(qtbot, tmp_path, monkeypatch)
    try:
        conversation_id = _chat(window.store)
        window.sidebar.refresh()
        window.chat.open_conversation(conversation_id)
        asked: list[str] = []
        target = tmp_path / "out" / "chat"
        target.parent.mkdir()
        window.ask_export_path = lambda parent, suggestion: asked.append(suggestion) or str(target)
        action = window.menus.export_action
        assert action.shortcut() == QKeySequence("Ctrl+Shift+E")
        assert action in window.menuBar().actions()[0].menu().actions()
        action.trigger()
        written = target.with_suffix(".md")
        assert Path(asked[0]).name == "Double it a b.md"
        text = written.read_text(encoding="utf-8")
        assert ANSWER in text and "<summary>Reasoning</summary>" in text
        # The choice to leave reasoning out sticks, and the next save panel opens where this one saved.
        window.menus.export_reasoning_action.trigger()
        assert window.settings.export_reasoning is False
        action.trigger()
        assert "<details>" not in written.read_text(encoding="utf-8")
        assert Path(asked[1]).parent == written.parent
        # Cancelling the panel writes nothing.
        window.ask_export_path = lambda parent, suggestion: ""
        assert window.export_chat() is None
    finally:
        window.worker.shutdown()
        window.store.close()


DAY = 86400


@pytest.mark.parametrize("days_ago,expected", [
    (0, "Today"), (1, "Yesterday"), (2, "Previous 7 Days"), (7, "Previous 7 Days"),
    (8, "Previous 30 Days"), (30, "Previous 30 Days"),
])
def test_date_groups(days_ago: int, expected: str) -> None:
    now = dt.datetime(2026, 12, 2, 12, 0).timestamp()
    assert date_group(now - days_ago * DAY, now) == expected


def test_older_chats_group_by_month() -> None:
    now = dt.datetime(2026, 12, 2, 12, 0).timestamp()
    assert date_group(dt.datetime(2026, 9, 15).timestamp(), now) == "September"
    assert date_group(dt.datetime(2025, 12, 25).timestamp(), now) == "December 2025"
    # Calendar days, not 24-hour spans: late last night is Yesterday, early this morning Today.
    assert date_group(dt.datetime(2026, 12, 1, 23, 59).timestamp(), now) == "Yesterday"
    assert date_group(dt.datetime(2026, 12, 2, 0, 1).timestamp(), now) == "Today"


def test_the_sidebar_shows_chats_under_date_sections(qtbot, tmp_path: Path, monkeypatch) -> None:
    window = _window(qtbot, tmp_path, monkeypatch)
    store = window.store
    try:
        now = time.time()
        ages = {"fresh": 0, "last night": 1, "this week": 3, "this month": 20, "long ago": 400}
        for title, days in ages.items():
            conversation = store.create_conversation(title)
            store.add_message(conversation.id, "user", title)
            store._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?",
                              (now - days * DAY, conversation.id))
        window.sidebar.refresh()
        old_month = date_group(now - 400 * DAY, now)
        assert window.sidebar.group_titles() == [
            ("Today", ["fresh"]), ("Yesterday", ["last night"]), ("Previous 7 Days", ["this week"]),
            ("Previous 30 Days", ["this month"]), (old_month, ["long ago"]),
        ]
        # Titles and ids are the chats only; a section title can't be selected.
        assert window.sidebar.titles() == list(ages)
        header = window.sidebar.list.item(0)
        assert not header.flags() & Qt.ItemFlag.ItemIsSelectable
        window.sidebar.list.setCurrentRow(1)
        qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Down)
        assert window.sidebar.list.currentItem().text() == "last night"
        # Up from the first chat, or a section title made current, lands on a chat.
        window.sidebar.list.setCurrentRow(1)
        qtbot.keyClick(window.sidebar.list, Qt.Key.Key_Up)
        assert window.sidebar.current_id() is not None
        window.sidebar.list.setCurrentRow(0)
        assert window.sidebar.list.currentItem().text() == "fresh"
    finally:
        window.worker.shutdown()
        store.close()
