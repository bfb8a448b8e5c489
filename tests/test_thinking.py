"""ThinkingParser and resolve_thinking."""

from __future__ import annotations

import pytest

from mlx_backend.events import AnswerDelta, ThinkingDelta
from mlx_backend.text.thinking import ThinkingParser, ends_inside_thinking, resolve_thinking, soft_switch
from mlx_backend.text.tokenizer import Qwen3Tokenizer
from tests.support.tokenizers import write_tiny_tokenizer


def _parse(chunks, *, starts_inside_thinking=False):
    parser = ThinkingParser(starts_inside_thinking)
    events = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.flush())
    return events


def _joined(events):
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer


def _all_splits(text):
    """Every way to cut ``text`` in two, plus one character at a time."""
    yield [text]
    for cut in range(1, len(text)):
        yield [text[:cut], text[cut:]]
    yield list(text)


# (model output, starts_inside_thinking, expected thinking, expected answer)
CASES = [
    ("<think>\nLet me add: 2+2=4.\n</think>\n\nThe answer is 4.", False, "Let me add: 2+2=4.", "The answer is 4."),
    # Thinking-2507: the template opened <think>, the output holds only </think>.
    ("The user greets.\nReply kindly.\n</think>\n\nHello! 😀", True, "The user greets.\nReply kindly.", "Hello! 😀"),
    # Hybrid with thinking off (or /no_think): an empty block.
    ("<think>\n\n</think>\n\nJust the answer.", False, "", "Just the answer."),
    # Instruct-2507 or a prompt that already holds the empty block: no tags at all.
    ("Plain answer\nwith two lines.", False, "", "Plain answer\nwith two lines."),
    # Whitespace before <think> is not an answer.
    ("\n\n<think>x</think>y", False, "x", "y"),
    # Tags after the answer began are text; only the first </think> closes a thought.
    ("Use <think> and </think> tags like this.", False, "", "Use <think> and </think> tags like this."),
    ("<think>a</think>b</think>c<think>d", False, "a", "b</think>c<think>d"),
    # Inner newlines of a thought survive; only the framing ones go.
    ("<think>\n\nline 1\n\nline 2\n\n</think>\n\n\nanswer\n\n", False, "line 1\n\nline 2", "answer\n\n"),
    # A model repeating <think> after the template opened it.
    ("<think>\nhmm\n</think>\n\nok", True, "hmm", "ok"),
    # Cut off mid-thought (max tokens): everything is thinking.
    ("<think>\nstill going\n", False, "still going", ""),
    ("partial thought </thi", True, "partial thought </thi", ""),
    # A "<" that turns out not to be a tag.
    ("<b>bold</b> answer", False, "", "<b>bold</b> answer"),
    ("<thin", False, "", "<thin"),
    ("", False, "", ""),
    ("", True, "", ""),
]


@pytest.mark.parametrize(("output", "inside", "thinking", "answer"), CASES)
def test_every_chunking_gives_the_same_split(output, inside, thinking, answer):
    for chunks in _all_splits(output):
        assert _joined(_parse(chunks, starts_inside_thinking=inside)) == (thinking, answer), chunks


def test_split_tags_are_held_back_not_emitted():
    parser = ThinkingParser(starts_inside_thinking=False)
    assert parser.feed("<thi") == []
    assert parser.feed("nk>\nreason") == [ThinkingDelta("reason")]
    assert parser.in_thinking
    assert parser.feed("ing</th") == [ThinkingDelta("ing")]
    assert parser.feed("ink>\n\nAns") == [AnswerDelta("Ans")]
    assert not parser.in_thinking
    assert parser.feed("wer") == [AnswerDelta("wer")]
    assert parser.flush() == []
    assert parser.saw_thinking


def test_trailing_newlines_of_a_thought_wait_for_what_follows():
    parser = ThinkingParser(starts_inside_thinking=True)
    assert parser.feed("step one\n") == [ThinkingDelta("step one")]
    assert parser.feed("\nstep two") == [ThinkingDelta("\n\nstep two")]


def test_one_feed_can_yield_thinking_then_answer():
    parser = ThinkingParser(starts_inside_thinking=False)
    assert parser.feed("<think>\nq\n</think>\n\na") == [ThinkingDelta("q"), AnswerDelta("a")]


def test_no_thinking_reported_for_a_plain_answer():
    parser = ThinkingParser(starts_inside_thinking=False)
    assert parser.feed("Hi") == [AnswerDelta("Hi")]
    assert not parser.saw_thinking


def test_parses_a_tokenized_reply_streamed_token_by_token(tmp_path):
    # End to end with the tiny tokenizer: ids -> streaming detokenizer -> parser.
    write_tiny_tokenizer(tmp_path)
    tokenizer = Qwen3Tokenizer.from_folder(tmp_path)
    reply = "<think>\n用户问好 😀, reply.\n</think>\n\n你好！How can I help? 🎉<|im_end|>"
    detokenizer = tokenizer.detokenizer()
    parser = ThinkingParser(starts_inside_thinking=False)
    events = []
    for token_id in tokenizer.encode(reply):
        events.extend(parser.feed(detokenizer.add_token(token_id)))
    events.extend(parser.feed(detokenizer.finalize()))
    events.extend(parser.flush())
    assert _joined(events) == ("用户问好 😀, reply.", "你好！How can I help? 🎉")
    assert all("\ufffd" not in e.text for e in events)


# -- resolve_thinking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "enable_thinking", "mode", "expected"),
    [
        ("Hello", None, "hybrid", True),
        ("Hello", True, "hybrid", True),
        ("Hello", False, "hybrid", False),
        ("Quick one /no_think", None, "hybrid", False),
        ("Quick one /no_think", True, "hybrid", False),
        ("Think hard /think", False, "hybrid", False),  # the hard switch wins (Qwen's docs)
        ("/no_think first, then /think", None, "hybrid", True),  # the last switch wins
        ("/think first, then /no_think.", None, "hybrid", False),
        ("Hello /no_think", None, "always", True),
        ("Hello", False, "always", True),
        ("Hello /think", True, "never", False),
        ("Hello", None, "never", False),
    ],
)
def test_resolve_thinking(text, enable_thinking, mode, expected):
    assert resolve_thinking(text, enable_thinking, mode) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/think", True),
        ("/no_think", False),
        ("explain\n/no_think\n", False),
        ("(/think)", True),
        ("I am thinking /thinking about it", None),
        ("see https://example.com/think", None),
        ("path/no_think/file", None),
        ("no switch at all", None),
        ("", None),
    ],
)
def test_soft_switch_is_a_word_of_its_own(text, expected):
    assert soft_switch(text) is expected


def test_ends_inside_thinking():
    assert ends_inside_thinking("<|im_start|>assistant\n<think>\n")
    assert not ends_inside_thinking("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not ends_inside_thinking("<|im_start|>assistant\n")


def test_a_hybrid_template_that_does_not_think_by_default_is_followed():
    # Qwen's card: the small Qwen3.5 models answer without thinking unless asked. A template
    # whose unset default renders like enable_thinking=false must be followed, not overridden.
    from mlx_backend.text.chat_template import ChatTemplate

    template = ChatTemplate(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking %}<think>\n"
        "{% else %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    assert template.thinking_mode == "hybrid" and not template.thinks_by_default
    assert resolve_thinking("hi", None, "hybrid", soft_switches=False, default=False) is False
    assert resolve_thinking("hi", True, "hybrid", soft_switches=False, default=False) is True
    # Qwen3's own template thinks by default, and /no_think still wins over enable_thinking=True.
    assert resolve_thinking("hi /no_think", True, "hybrid") is False
    assert resolve_thinking("hi", None, "hybrid") is True


def test_a_template_that_takes_any_effort_or_names_no_default_offers_none():
    from mlx_backend.text.chat_template import ChatTemplate

    base = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    printing = ChatTemplate(base + "{% if reasoning_effort is defined %}Effort: {{ reasoning_effort }}{% endif %}"
                            "{% if m is defined and m.role == 'user' %}{% endif %}")
    assert printing.reasoning_efforts == ()  # any value renders: nothing to offer as a list


def test_soft_switches_follow_what_the_template_does_when_thinking_not_its_default():
    # A Qwen3.5-style template that does not think by default still opens <think> when asked:
    # it belongs to the family that dropped /think and /no_think.
    from mlx_backend.text.chat_template import ChatTemplate

    template = ChatTemplate(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if enable_thinking is defined and enable_thinking %}<think>\n"
        "{% else %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
    )
    assert not template.thinks_by_default and not template.soft_switches
