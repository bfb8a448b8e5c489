"""The words of every summary request: document blocks, part and merge prompts, instructions.

Document text goes in as it is: the engine encodes control tokens typed inside a message as
plain text, so a document about chat templates cannot end a turn or open a fake one.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mlx_backend.documents.reading import Document
from mlx_backend.documents.summary.facts import SummaryOptions
from mlx_backend.documents.summary.protocols import SummaryTokenizer
from mlx_backend.documents.summary.tokens import render_prompt
from mlx_backend.events import ChatMessage

DEFAULT_INSTRUCTIONS = (
    "Summarize the document above. Start with a short overview paragraph, then list the key "
    "points (facts, figures, decisions, open questions) as bullets. Write in the document's language."
)
_DEFAULT_INSTRUCTIONS_MANY = (
    "Summarize the documents above. Start with a short overview, then give the key points of each "
    "document as bullets under its name. Write in the documents' language."
)
_PART_INSTRUCTIONS = (
    "This is part {part} of {parts} of a longer text{where}. Summarize this part on its own in a few "
    "short bullets, keeping names, numbers, dates and decisions. No introduction, no conclusion."
)
MERGE_INSTRUCTIONS = (
    "These are summaries of consecutive parts of a longer text. Merge them into one shorter "
    "summary that keeps every key fact, name, number and decision, in order, and where each "
    "comes from (the part's pages or section)."
)
# The final combine: each point says where it comes from, as the part headings say.
_SOURCES = (" After each key point, name in parentheses the pages or section it comes from, as the part "
            "headings give them.")


def document_label(document: Document) -> str:
    if document.pages:
        return f"{document.name} ({document.pages:,} page{'s' if document.pages != 1 else ''})"
    return document.name


def _attribute(value: str) -> str:
    return value.replace('"', "'").replace("\n", " ")


def _document_block(document: Document, text: str, part: Optional[tuple[int, int]] = None,
                    location: str = "") -> str:
    attributes = f'name="{_attribute(document.name)}"'
    if document.pages:
        attributes += f' pages="{document.pages}"'
    if part:
        attributes += f' part="{part[0]} of {part[1]}"'
    if location:
        attributes += f' where="{_attribute(location)}"'
    body = text
    if document.kind == "code":
        body = f"```{document.language or ''}\n{body}\n```"
    return f"<document {attributes}>\n{body}\n</document>"


def single_pass_prompt(documents: Sequence[Document], instructions: Optional[str]) -> str:
    wishes = instructions or (_DEFAULT_INSTRUCTIONS_MANY if len(documents) > 1 else DEFAULT_INSTRUCTIONS)
    blocks = [_document_block(d, d.text) for d in documents]
    return "\n\n".join(blocks) + "\n\n" + wishes


def final_instructions(documents: Sequence[Document], options: SummaryOptions, located: bool = False) -> str:
    """``located``: the part headings say which section each part is, so ask for sources."""
    wishes = options.instructions or (_DEFAULT_INSTRUCTIONS_MANY if len(documents) > 1 else DEFAULT_INSTRUCTIONS)
    wishes = wishes.replace("documents above", "documents").replace("document above", "document")
    names = ", ".join(d.name for d in documents)
    return (f"These are summaries of consecutive parts of {names}. Combine them into one summary of the whole. "
            f"{wishes}{_SOURCES if located else ''}")


def part_prompt(document: Document, text: str, part: int, parts: int, location: str = "") -> str:
    where = f" ({location} of {document.name})" if location else ""
    return (_document_block(document, text, (part, parts), location) + "\n\n"
            + _PART_INSTRUCTIONS.format(part=part, parts=parts, where=where))


def combine_prompt(summaries: Sequence[str], first_part: int, instructions: str,
                   locations: Sequence[str] = ()) -> str:
    """``locations`` name where each summarized part is ("section “Budget”"), when known."""
    def heading(i: int) -> str:
        where = locations[i] if i < len(locations) else ""
        return f"## Part {first_part + i}" + (f" ({where})" if where else "")

    sections = [f"{heading(i)}\n{s.strip() or '(nothing of note)'}" for i, s in enumerate(summaries)]
    return "<summaries>\n" + "\n\n".join(sections) + "\n</summaries>\n\n" + instructions


def request_messages(content: str, options: SummaryOptions) -> tuple[ChatMessage, ...]:
    system = (ChatMessage("system", options.system_prompt),) if options.system_prompt else ()
    return system + (ChatMessage("user", content),)


def count_prompt_tokens(tokenizer: SummaryTokenizer, content: str, options: SummaryOptions) -> int:
    return len(render_prompt(tokenizer, request_messages(content, options), enable_thinking=options.enable_thinking))
