"""The conversation store: persistence, search, truncation, crash safety and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from app.chat.store import (
    SCHEMA_VERSION,
    Attachment,
    ConversationStore,
    StoreError,
    _migration_1,
    _migration_2,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "conversations.sqlite3"


def test_messages_survive_reopening_with_all_their_fields(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation("Trip", model="mlx-community/Qwen3-8B-4bit")
    user = store.add_message(
        chat.id, "user", "Plan Kyoto", attachments=[Attachment("notes.pdf", "/tmp/notes.pdf", details={"pages": 3})]
    )
    store.add_message(
        chat.id, "assistant", "Day 1: Fushimi Inari", thinking="They want a plan.", stats={"generation_tps": 41.5}
    )
    store.close()

    reopened = ConversationStore(db_path)
    [conversation] = reopened.conversations()
    assert (conversation.title, conversation.model) == ("Trip", "mlx-community/Qwen3-8B-4bit")
    first, second = reopened.messages(chat.id)
    assert first.id == user.id and first.role == "user" and first.content == "Plan Kyoto"
    assert first.attachments == (Attachment("notes.pdf", "/tmp/notes.pdf", details={"pages": 3}),)
    assert (second.role, second.content, second.thinking) == ("assistant", "Day 1: Fushimi Inari", "They want a plan.")
    assert second.stats == {"generation_tps": 41.5} and second.status == "complete"


def test_database_uses_wal_and_records_the_schema_version(db_path: Path) -> None:
    store = ConversationStore(db_path)
    assert store.schema_version == SCHEMA_VERSION
    mode = sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode.lower() == "wal"


def test_partial_answer_saved_while_streaming_survives_a_kill(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "Count to ten")
    answer = store.add_message(chat.id, "assistant", "", status="interrupted")
    store.update_message(answer.id, content="1, 2, 3", thinking="easy")
    # No close(): simulate the process dying here. Another connection sees the saved part.
    other = ConversationStore(db_path)
    saved = other.messages(chat.id)[-1]
    assert (saved.content, saved.thinking, saved.status) == ("1, 2, 3", "easy", "interrupted")


def test_list_is_newest_first_and_search_matches_titles_and_text(db_path: Path) -> None:
    store = ConversationStore(db_path, clock=Clock())
    python = store.create_conversation("Python lists")
    kyoto = store.create_conversation("Kyoto trip")
    store.add_message(python.id, "user", "What is a 100% safe_name?")
    assert [c.id for c in store.conversations()] == [python.id, kyoto.id]  # touched by the message
    assert [c.id for c in store.conversations("KYOTO")] == [kyoto.id]
    assert [c.id for c in store.conversations("safe_name")] == [python.id]
    # LIKE wildcards in the query are literal characters, not patterns.
    assert [c.id for c in store.conversations("100%")] == [python.id]
    assert store.conversations("_x_") == []


def test_rename_normalises_whitespace_and_never_leaves_an_empty_title(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation()
    store.rename_conversation(chat.id, "  Weekend   plans \n")
    assert store.conversation(chat.id).title == "Weekend plans"
    store.rename_conversation(chat.id, "   ")
    assert store.conversation(chat.id).title == "New Chat"


def test_delete_conversation_removes_its_messages(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation()
    store.add_message(chat.id, "user", "hi")
    store.delete_conversation(chat.id)
    assert store.conversation(chat.id) is None
    assert store.messages(chat.id) == []
    count = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0


def test_delete_messages_from_truncates_only_that_conversation(db_path: Path) -> None:
    store = ConversationStore(db_path)
    a, b = store.create_conversation("a"), store.create_conversation("b")
    a1 = store.add_message(a.id, "user", "one")
    a2 = store.add_message(a.id, "assistant", "two")
    b1 = store.add_message(b.id, "user", "other")
    store.add_message(a.id, "user", "three")
    store.delete_messages_from(a.id, a2.id)
    assert [m.id for m in store.messages(a.id)] == [a1.id]
    assert [m.id for m in store.messages(b.id)] == [b1.id]


def test_unknown_status_is_refused(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation()
    with pytest.raises(ValueError, match="status"):
        store.add_message(chat.id, "assistant", "x", status="streaming")  # type: ignore[arg-type]


def test_version_1_database_is_migrated_without_losing_messages(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    old = sqlite3.connect(db_path, isolation_level=None)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old.execute("BEGIN")
    _migration_1(old)
    old.execute("INSERT INTO schema_version VALUES (1)")
    old.execute("INSERT INTO conversations VALUES ('c1', 'Old chat', 1, 2, NULL)")
    old.execute(
        "INSERT INTO messages (conversation_id, role, content, thinking, status, stats, created_at) "
        "VALUES ('c1', 'assistant', 'kept', '', 'complete', NULL, 3)"
    )
    old.execute("COMMIT")
    old.close()

    store = ConversationStore(db_path)
    assert store.schema_version == SCHEMA_VERSION
    [message] = store.messages("c1")
    assert message.content == "kept" and message.attachments == () and message.error == ""
    store.update_message(message.id, status="error", error="Out of memory.")
    assert store.message(message.id).error == "Out of memory."


def test_database_from_a_newer_app_is_refused_with_a_clear_message(db_path: Path) -> None:
    ConversationStore(db_path).close()
    sqlite3.connect(db_path, isolation_level=None).execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer version of Qwen Desk"):
        ConversationStore(db_path)


def test_a_file_that_is_not_a_database_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "conversations.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot be opened"):
        ConversationStore(path)


def test_database_from_the_previous_app_keeps_every_chat_and_gains_versions_pins_and_settings(db_path: Path) -> None:
    # Written exactly as the app before per-chat settings did: schema 2, through its own steps.
    db_path.parent.mkdir(parents=True)
    old = sqlite3.connect(db_path, isolation_level=None)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    old.execute("BEGIN")
    _migration_1(old)
    _migration_2(old)
    old.execute("INSERT INTO schema_version VALUES (2)")
    old.execute("INSERT INTO conversations VALUES ('a', 'Kyoto', 1, 5, 'mlx-community/Qwen3-8B-4bit')")
    old.execute("INSERT INTO conversations VALUES ('b', 'Python', 2, 9, NULL)")
    for conversation, role, content, stats in (
        ("a", "user", "Plan Kyoto", None),
        ("a", "assistant", "Day 1: Fushimi Inari", '{"generation_tps": 40.0}'),
        ("b", "user", "What is a list?", None),
        ("b", "assistant", "An ordered collection.", None),
    ):
        old.execute(
            "INSERT INTO messages (conversation_id, role, content, status, stats, attachments, created_at) "
            "VALUES (?, ?, ?, 'complete', ?, '[{\"name\": \"notes.pdf\"}]', 3)",
            (conversation, role, content, stats))
    old.execute("COMMIT")
    old.close()

    store = ConversationStore(db_path)
    assert store.schema_version == SCHEMA_VERSION
    assert [(c.id, c.title, c.model, c.pinned, c.settings) for c in store.conversations()] == [
        ("b", "Python", None, False, {}), ("a", "Kyoto", "mlx-community/Qwen3-8B-4bit", False, {})]
    user, answer = store.messages("a")
    assert (user.content, answer.content, answer.stats) == ("Plan Kyoto", "Day 1: Fushimi Inari", {"generation_tps": 40.0})
    assert user.attachments == (Attachment("notes.pdf"),)
    assert answer.model is None and answer.version_ids == () and answer.version_number == 1
    # The new features work on the old chats.
    store.set_pinned("a", True)
    again = store.add_message("a", "assistant", "Day 1: Kinkaku-ji", model="Qwen3-4B", version_of=answer.id)
    assert [c.id for c in store.conversations()] == ["a", "b"]
    assert [m.id for m in store.messages("a")] == [user.id, again.id]
    assert store.messages("a")[1].version_ids == (answer.id, again.id)


def test_versions_of_an_answer(db_path: Path) -> None:
    store = ConversationStore(db_path)
    chat = store.create_conversation()
    question = store.add_message(chat.id, "user", "Name a colour")
    red = store.add_message(chat.id, "assistant", "Red", model="Qwen3-8B")
    blue = store.add_message(chat.id, "assistant", "Blue", model="Qwen3-4B", version_of=red.id)
    green = store.add_message(chat.id, "assistant", "Green", version_of=blue.id)
    assert green.version_ids == (red.id, blue.id, green.id) and green.version_number == 3
    assert [m.content for m in store.messages(chat.id)] == ["Name a colour", "Green"]
    store.choose_version(blue.id)
    [_, shown] = store.messages(chat.id)
    assert (shown.content, shown.model, shown.version_number) == ("Blue", "Qwen3-4B", 2)
    assert [m.content for m in store.versions(red.id)] == ["Red", "Blue", "Green"]
    # Deleting the version shown brings back the newest one left.
    store.delete_message(blue.id)
    assert [m.content for m in store.messages(chat.id)] == ["Name a colour", "Green"]
    # Edit-and-resend of the question removes every version of what followed it.
    store.delete_messages_from(chat.id, question.id)
    assert store.messages(chat.id) == [] and store.message(red.id) is None
    with pytest.raises(ValueError, match="No message"):
        store.add_message(chat.id, "assistant", "x", version_of=red.id)


def test_pins_and_chat_settings_survive_reopening(db_path: Path) -> None:
    store = ConversationStore(db_path, clock=Clock())
    old = store.create_conversation("Old")
    store.create_conversation("New")
    store.set_pinned(old.id, True)
    store.set_conversation_settings(old.id, {"temperature": 0.3, "system_prompt": "Be brief."})
    store.close()
    reopened = ConversationStore(db_path)
    assert [(c.title, c.pinned) for c in reopened.conversations()] == [("Old", True), ("New", False)]
    assert reopened.conversation(old.id).settings == {"temperature": 0.3, "system_prompt": "Be brief."}
    assert [c.title for c in reopened.conversations("new")] == ["New"]
