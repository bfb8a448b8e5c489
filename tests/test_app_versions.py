"""Answer versions (‹ 1/2 ›) and pinned chats: a real window and engine on a tiny checkpoint,
restarted on the same database."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.chat.conversation_list import ID_ROLE
from app.chat.store import ConversationStore
from tests.support.chat_window import ChatWindow
from tests.support.checkpoints import write_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("versions"), max_position_embeddings=1024)


@pytest.fixture
def launch(qtbot, tmp_path, checkpoint):
    made: list[ChatWindow] = []

    def make(**kwargs) -> ChatWindow:
        if made:
            made[-1].close()  # one app at a time on the database, as after a real restart
        made.append(ChatWindow(qtbot, tmp_path, checkpoint, **kwargs))
        return made[-1]

    yield make
    made[-1].close()


def test_regenerate_keeps_versions_and_the_chosen_one_is_sent_next(launch, qtbot):
    # Argmax with 4 then 10 tokens: the second answer is the first one, longer.
    app = launch(answer_tokens=[4, 10, 6])
    app.send("Pick a number")
    [first] = app.assistant_views()
    first_id, first_text = first.message_id, first.answer_text
    assert not first.versions.isVisible()  # one version: no arrows
    app.regenerate_last()
    [second] = app.assistant_views()
    second_text = second.answer_text
    assert second_text != first_text and second_text.startswith(first_text)
    assert second.versions.isVisible() and second.versions.label.text() == "2/2"
    # The regeneration was asked without the answer it replaces.
    assert [m.role for m in app.recorder.requests[1].messages] == ["user"]
    user, answer = app.messages()
    assert answer.id == second.message_id and answer.version_ids == (first_id, second.message_id)

    # ‹ goes back to the first answer: on screen, in the store and in the next turn's history.
    assert not second.versions.next_button.isEnabled()
    qtbot.mouseClick(second.versions.previous_button, Qt.MouseButton.LeftButton)
    [shown] = app.assistant_views()
    assert shown.message_id == first_id and shown.answer_text == first_text
    assert shown.versions.label.text() == "1/2" and not shown.versions.previous_button.isEnabled()
    assert [m.id for m in app.messages()] == [user.id, first_id]
    app.send("Why?")
    follow_up = app.recorder.requests[-1]
    assert [(m.role, m.content) for m in follow_up.messages] == [
        ("user", "Pick a number"), ("assistant", first_text), ("user", "Why?")]
    # Only the last answer can be regenerated, but an earlier one still switches versions.
    older, last = app.assistant_views()
    assert older.versions.isVisible() and not older.regenerate_button.isVisibleTo(older)
    assert not last.versions.isVisible()


def test_versions_and_the_choice_survive_a_restart(launch, qtbot):
    app = launch(answer_tokens=[3, 7])
    app.send("Tell me a story")
    first_id = app.assistant_views()[0].message_id
    app.regenerate_last()
    second_id = app.assistant_views()[0].message_id
    qtbot.mouseClick(app.assistant_views()[0].versions.previous_button, Qt.MouseButton.LeftButton)
    conversation = app.chat.conversation_id

    again = launch(answer_tokens=[5])
    again.chat.open_conversation(conversation)
    [view] = again.assistant_views()
    assert view.message_id == first_id and view.versions.label.text() == "1/2"
    qtbot.mouseClick(view.versions.next_button, Qt.MouseButton.LeftButton)
    assert again.assistant_views()[0].message_id == second_id

    third = launch(answer_tokens=[5])
    third.chat.open_conversation(conversation)
    [view] = third.assistant_views()
    assert view.message_id == second_id and view.versions.label.text() == "2/2"
    # A third version: ‹ 3/3 ›, all three kept.
    third.regenerate_last()
    [view] = third.assistant_views()
    assert view.versions.label.text() == "3/3"
    assert [m.id for m in third.store.versions(view.message_id)][:2] == [first_id, second_id]


def test_a_failed_answer_is_replaced_not_kept_as_a_version(launch):
    app = launch(answer_tokens=[4])
    app.send("Hello")
    conversation = app.chat.conversation_id
    good = app.messages()[-1]
    # Make the answer a failure, as a crash of the worker would leave it.
    app.store.update_message(good.id, content="", status="error", error="Out of memory.")
    app.chat.open_conversation(conversation)
    app.regenerate_last()
    user, answer = app.messages()
    assert answer.status == "complete" and answer.version_ids == ()
    assert app.store.message(good.id) is None
    assert not app.assistant_views()[0].versions.isVisible()


def test_arrows_are_off_while_an_answer_streams(launch):
    app = launch(answer_tokens=[3, 5])
    app.send("One")
    app.regenerate_last()
    view = app.assistant_views()[0]
    app.window.composer.set_text("Two")
    app.window.composer.submit()
    assert app.chat.generating and not view.versions.isEnabled()
    view.versions.step(-1)  # ignored: the history is being answered
    app.qtbot.waitUntil(lambda: not app.chat.generating, timeout=60_000)
    assert app.messages()[1].id == view.message_id and view.versions.isEnabled()


def chat_item(sidebar, title: str):
    [item] = [sidebar.list.item(row) for row in range(sidebar.list.count())
              if sidebar.list.item(row).text() == title and sidebar.list.item(row).data(ID_ROLE) is not None]
    return item


def test_pinned_chats_come_first_and_stay_pinned_after_a_restart(launch):
    app = launch(answer_tokens=[2])
    for text in ("Oldest", "Middle", "Newest"):
        app.window.new_chat()
        app.send(text)
    sidebar = app.window.sidebar
    assert sidebar.titles() == ["Newest", "Middle", "Oldest"]
    item = chat_item(sidebar, "Oldest")
    actions = {a.text(): a for a in sidebar.context_menu(item).actions()}
    assert "Unpin" not in actions and item.icon().isNull()
    actions["Pin"].trigger()
    assert sidebar.titles() == ["Oldest", "Newest", "Middle"]
    assert not chat_item(sidebar, "Oldest").icon().isNull() and chat_item(sidebar, "Newest").icon().isNull()
    assert sidebar.group_titles()[0] == ("Pinned", ["Oldest"])  # its own section, above the dates

    again = launch(answer_tokens=[2])
    sidebar = again.window.sidebar
    assert sidebar.titles() == ["Oldest", "Newest", "Middle"]
    # A newer answer in an unpinned chat does not move it above the pin.
    again.chat.open_conversation(sidebar.ids()[2])
    again.send("More")
    assert sidebar.titles() == ["Oldest", "Middle", "Newest"]
    actions = {a.text(): a for a in sidebar.context_menu(chat_item(sidebar, "Oldest")).actions()}
    actions["Unpin"].trigger()
    assert sidebar.titles() == ["Middle", "Newest", "Oldest"]
    reopened = ConversationStore(again.store.path)
    assert [c.pinned for c in reopened.conversations()] == [False, False, False]
    reopened.close()
