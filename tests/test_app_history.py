"""The history the app sends: earlier answers go with their reasoning, as the model wrote them."""

from app.chat.history import history_messages
from app.chat.store import StoredMessage


def _message(i: int, role: str, content: str, thinking: str = "", status: str = "complete") -> StoredMessage:
    return StoredMessage(id=i, conversation_id="c", role=role, content=content, thinking=thinking, status=status)


def test_answers_carry_their_reasoning_and_failed_or_empty_ones_are_left_out():
    history = [
        _message(1, "user", "What is 2+2?"),
        _message(2, "assistant", "4", thinking="Two plus two is four."),
        _message(3, "user", "And 3+3?"),
        _message(4, "assistant", "6"),  # answered without thinking
        _message(5, "user", "And 4+4?"),
        _message(6, "assistant", "", thinking="partial", status="cancelled"),
        _message(7, "assistant", "boom", status="error"),
    ]
    messages = history_messages(" Be brief. ", history)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "What is 2+2?"),
        ("assistant", "<think>\nTwo plus two is four.\n</think>\n\n4"),
        ("user", "And 3+3?"),
        ("assistant", "6"),
        ("user", "And 4+4?"),
    ]


def test_a_replaced_message_keeps_its_reasoning():
    history = [_message(1, "user", "short"), _message(2, "assistant", "old", thinking="why")]
    messages = history_messages("", history, replaced={1: "the whole document", 2: "new"})
    assert [m.content for m in messages] == ["the whole document", "<think>\nwhy\n</think>\n\nnew"]
