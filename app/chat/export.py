"""A chat as a Markdown file (File > Export Chat as Markdown..., Shift+Cmd+E).

Messages are written as the model and the user wrote them, so code blocks, tables and LaTeX
come out intact. The reasoning goes into a collapsed ``<details>`` block (GitHub, VS Code and
most Markdown viewers fold it) or is left out, as the user chooses.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from app.chat.store import Conversation, ConversationStore, StoredMessage

ROLE_HEADINGS = {"user": "You", "assistant": "Assistant", "system": "System prompt"}


def conversation_markdown(
    conversation: Conversation,
    messages: Iterable[StoredMessage],
    *,
    include_reasoning: bool = True,
    exported_at: Optional[float] = None,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exported_at if exported_at is not None else time.time()))
    facts = [f"Exported from Qwen Desk on {when}"]
    if conversation.model:
        facts.append(f"model: {conversation.model}")
    parts = [f"# {_one_line(conversation.title)}", "_" + ", ".join(facts) + "_"]
    for message in messages:
        parts.append(f"## {ROLE_HEADINGS.get(message.role, message.role.title())}")
        if message.attachments:
            parts.append("\n".join(f"- Attached: `{a.name}`" for a in message.attachments))
        if include_reasoning and message.thinking.strip():
            parts.append(_details("Reasoning", message.thinking.strip()))
        if message.content.strip():
            parts.append(message.content.rstrip())
        if message.status == "interrupted":
            parts.append("_(stopped before the end)_")
        elif message.status == "error":
            parts.append(f"_(failed: {_one_line(message.error or 'the answer failed')})_")
    return "\n\n".join(parts) + "\n"


def _details(summary: str, body: str) -> str:
    # Blank lines around the body let viewers render the Markdown inside; a literal closing
    # tag in the text would end the block early, so it is escaped.
    body = re.sub(r"</details\s*>", "&lt;/details&gt;", body, flags=re.IGNORECASE)
    return f"<details>\n<summary>{summary}</summary>\n\n{body}\n\n</details>"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def suggested_filename(title: str) -> str:
    name = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", title).strip(" .")
    return (" ".join(name.split())[:80] or "Chat") + ".md"


def export_conversation(
    parent: QWidget,
    store: ConversationStore,
    conversation_id: Optional[str],
    *,
    include_reasoning: bool,
    folder: Path,
    ask_path: Optional[Callable[[QWidget, str], str]] = None,
) -> Optional[Path]:
    """Ask where to save the chat (a native save panel) and write it; None if cancelled."""
    conversation = store.conversation(conversation_id) if conversation_id else None
    if conversation is None:
        QMessageBox.information(parent, "Export Chat", "Open a chat to export it.")
        return None
    ask = ask_path or _ask_path
    chosen = ask(parent, str(folder / suggested_filename(conversation.title)))
    if not chosen:
        return None
    path = Path(chosen)
    if not path.suffix:
        path = path.with_suffix(".md")
    text = conversation_markdown(conversation, store.messages(conversation.id), include_reasoning=include_reasoning)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        QMessageBox.warning(parent, "Export Chat", f"Could not save {path.name}: {error.strerror or error}.")
        return None
    return path


def _ask_path(parent: QWidget, suggestion: str) -> str:
    path, _ = QFileDialog.getSaveFileName(parent, "Export Chat as Markdown", suggestion, "Markdown (*.md)")
    return path
