"""A streaming answer costs the same per update at any length, and ends rendered as a stored one.

The work is counted in Markdown characters handed to the renderer per update (not timed): it
must stay under a bound that does not depend on how long the answer already is.
"""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from app.chat.message_view import MessageView
from app.chat.rendering import RenderColors
from app.chat.store import StoredMessage
from app.chat.streaming_render import SEAL_CHARS, ChunkSplitter

STEP = 16  # characters per delta: about what the worker's batching hands over at speed
PARAGRAPH = (
    "The committee reviewed the quarterly figures for every regional office and noted that "
    "shipping delays and a late harvest explained most of the variance. "
)


def long_answer(sections: int) -> str:
    """Markdown like a model writes: headings, paragraphs, lists, tables, code."""
    parts = []
    for i in range(sections):
        parts.append(f"## Part {i}\n\n{PARAGRAPH * 2}\n\n")
        parts.append(f"1. first point of {i}\n2. second point with `code`\n3. third **point**\n\n")
        parts.append("| a | b |\n|---|---|\n| 1 | 2 |\n\n")
        parts.append(f"```python\ndef f_{i}(x):\n    return x * {i}\n```\n\n")
    return "".join(parts)


def stream(view: MessageView, text: str, step: int = STEP) -> None:
    view.begin_streaming()
    for i in range(0, len(text), step):
        view.append_answer(text[i : i + step])
        view._render_now()  # as the render timer would, once per delta here (the worst case)


def colors() -> RenderColors:
    return RenderColors.from_palette(QApplication.palette())


def assistant(content: str = "", message_id: int = 1) -> StoredMessage:
    return StoredMessage(message_id, "c", "assistant", content, status="streaming" if not content else "complete")


def rendered_per_update(qtbot, text: str) -> list[int]:
    view = MessageView(assistant(), colors())
    qtbot.addWidget(view)
    stream(view, text)
    counts = list(view._stream_view.rendered_chars)
    view.finish("complete")
    return counts


def test_the_work_per_update_does_not_grow_with_the_answer(qtbot) -> None:
    short, long = long_answer(1), long_answer(40)  # ~400 chars vs ~16,000 (about 4,000 tokens)
    assert len(long) > 10 * SEAL_CHARS
    short_counts = rendered_per_update(qtbot, short)
    long_counts = rendered_per_update(qtbot, long)
    longest_block = max(len(block) for block in long.split("\n\n"))
    bound = SEAL_CHARS + longest_block + 2 * SEAL_CHARS  # the open chunk, plus a chunk sealed at once
    assert max(long_counts) <= bound
    # Late updates cost what early ones did: the last fifth renders no more than the first.
    fifth = len(long_counts) // 5
    assert max(long_counts[-fifth:]) <= max(long_counts[:fifth]) + longest_block
    # A whole re-render per update would have handed the renderer about len(text)^2 / (2 * step).
    assert sum(long_counts) < len(long) * (bound / STEP) and sum(long_counts) < len(long) ** 2 / (2 * STEP) / 3
    assert max(short_counts) <= len(short) + 1


def test_a_long_code_block_is_cut_at_line_ends_and_stays_bounded(qtbot) -> None:
    code = "```python\n" + "".join(f"value_{i} = compute({i}, 'some argument')\n" for i in range(500)) + "```\n"
    counts = rendered_per_update(qtbot, "Here is the code:\n\n" + code + "\nDone.\n")
    assert len(code) > 10 * SEAL_CHARS
    assert max(counts) <= 3 * SEAL_CHARS + 200


def test_chunks_cover_the_text_in_order_with_fences_closed_and_reopened() -> None:
    text = long_answer(20) + "```\n" + "line of code\n" * 400 + "```\n\nThe end.\n"
    splitter = ChunkSplitter()
    chunks = []
    for i in range(0, len(text), 13):
        chunks += splitter.feed(text[: i + 13])
    start, prefix = splitter.open_chunk_start
    assert chunks and chunks[0].start == 0
    for before, after in zip(chunks, chunks[1:]):
        assert before.end == after.start
    assert chunks[-1].end == start
    for chunk in chunks:
        body = chunk.markdown(text)
        assert body.count("```") % 2 == 0, "a chunk leaves a code fence open"
        if chunk.suffix:
            assert chunk.suffix == "```\n"
    assert any(chunk.prefix == "```\n" for chunk in chunks)


@pytest.mark.parametrize("text", [long_answer(12), "Thinking out loud:\n\n```\n" + "x = 1\n" * 600 + "```\n"])
def test_the_finished_answer_renders_exactly_like_a_stored_one(qtbot, text: str) -> None:
    streamed = MessageView(assistant(), colors())
    qtbot.addWidget(streamed)
    stream(streamed, text)
    assert len(streamed._stream_view.sealed_views) >= 2  # the stream really was cut
    streamed.finish("complete")
    stored = MessageView(assistant(text), colors())
    qtbot.addWidget(stored)
    assert streamed._stream_view is None and streamed.body.isVisibleTo(streamed)
    assert streamed.body.document().toHtml() == stored.body.document().toHtml()
    assert streamed.answer_text == text


def test_streamed_thinking_is_appended_and_tidied_at_the_end(qtbot) -> None:
    view = MessageView(assistant(), colors())
    qtbot.addWidget(view)
    view.begin_streaming()
    thought = "\n" + "I should check the figures. " * 300 + "\n\n"
    for i in range(0, len(thought), 11):
        view.append_thinking(thought[i : i + 11])
        view._render_now()
    shown = view.thinking.body.document().toPlainText()
    assert shown.startswith("I should") and shown.strip() == thought.strip()
    view.append_answer("Done.")
    view.finish("complete")
    view.thinking.set_expanded(True)  # the answer collapsed it; opened again, it shows the tidy text
    assert view.thinking.body.document().toPlainText() == thought.strip()
    assert view.thinking.text == thought
