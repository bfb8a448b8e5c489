"""Conversations on disk: one SQLite database in the app-data folder.

Why SQLite: one file, atomic writes, and WAL mode lets the GUI save a streaming answer every
second without blocking reads. Partial answers are written while they stream with status
``interrupted``; only a normal finish flips them to ``complete``, so a crash or a kill mid-answer
leaves exactly what the user saw, correctly labelled.

Used from the GUI thread only (one connection); every write is small and commits at once.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from mlx_backend.errors import QwenDeskError

MessageRole = Literal["system", "user", "assistant"]
MessageStatus = Literal["complete", "interrupted", "error"]
STATUSES: tuple[str, ...] = ("complete", "interrupted", "error")
DATABASE_NAME = "conversations.sqlite3"
DEFAULT_TITLE = "New Chat"


class StoreError(QwenDeskError):
    """The conversation database cannot be opened or is from a newer version of the app."""


@dataclass(frozen=True)
class Attachment:
    """A file shown as a chip on a user message (documents dropped on the window)."""

    name: str
    path: str = ""
    kind: str = "document"
    # Free-form facts for the chip's tooltip (pages, characters, ...), JSON-serialisable.
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "kind": self.kind, "details": self.details}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Attachment":
        return cls(
            name=str(data.get("name", "")),
            path=str(data.get("path", "")),
            kind=str(data.get("kind", "document")),
            details=dict(data.get("details") or {}),
        )


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float
    model: Optional[str] = None
    pinned: bool = False
    # Per-chat overrides (app.chat.chat_settings.ChatSettings as JSON); {} means the app's defaults.
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: str
    role: MessageRole
    content: str
    thinking: str = ""
    status: MessageStatus = "complete"
    # GenerationStats as a dict (tokens/s, TTFT, ...) for assistant messages.
    stats: Optional[dict[str, Any]] = None
    attachments: tuple[Attachment, ...] = ()
    # A plain-language reason for status "error".
    error: str = ""
    created_at: float = 0.0
    # The model that wrote an assistant message (a folder or a Hugging Face repo id).
    model: Optional[str] = None
    # An answer regenerated: the ids of all its versions, oldest first (empty: only one version).
    version_ids: tuple[int, ...] = ()

    @property
    def version_number(self) -> int:
        """1-based place of this version among ``version_ids`` (1 when there is one)."""
        return self.version_ids.index(self.id) + 1 if self.id in self.version_ids else 1


@dataclass(frozen=True)
class StoredToolCall:
    """One tool call of an assistant turn. ``status``: running, waiting, done, error, denied,
    malformed. ``images``: (mime type, bytes) pairs the tool returned."""

    message_id: int
    step: int
    index: int
    name: str  # as the model called it
    server: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    raw: str = ""  # the call as the model wrote it
    result: str = ""
    images: tuple[tuple[str, bytes], ...] = ()
    status: str = "running"
    duration_s: float = 0.0
    step_answer: str = ""  # what the model wrote in this step before its calls
    step_thinking: str = ""

    def to_row(self) -> dict[str, Any]:
        images = [{"mime_type": m, "data": base64.b64encode(d).decode()} for m, d in self.images]
        return {
            "message_id": self.message_id, "step": self.step, "call_index": self.index, "name": self.name,
            "server": self.server, "tool": self.tool, "arguments": json.dumps(self.arguments), "raw": self.raw,
            "result": self.result, "images": json.dumps(images), "status": self.status,
            "duration_s": self.duration_s, "step_answer": self.step_answer, "step_thinking": self.step_thinking,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "StoredToolCall":
        images = tuple((i["mime_type"], base64.b64decode(i["data"])) for i in json.loads(row["images"] or "[]"))
        return cls(
            int(row["message_id"]), int(row["step"]), int(row["call_index"]), row["name"], row["server"],
            row["tool"], json.loads(row["arguments"] or "{}"), row["raw"], row["result"], images, row["status"],
            float(row["duration_s"]), row["step_answer"], row["step_thinking"],
        )


def _migration_1(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's transaction early.
    _execute_all(
        db,
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            model TEXT
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            thinking TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'interrupted', 'error')),
            stats TEXT,
            created_at REAL NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
        CREATE INDEX conversations_by_update ON conversations(updated_at DESC);
        """,
    )


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _migration_2(db: sqlite3.Connection) -> None:
    # Document drops: chips on user messages; and a reason kept for failed answers.
    db.execute("ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '[]'")
    db.execute("ALTER TABLE messages ADD COLUMN error TEXT NOT NULL DEFAULT ''")


def _migration_3(db: sqlite3.Connection) -> None:
    # Per-chat settings and pins; the model behind each answer; answer versions: a regenerated
    # answer keeps its old versions as inactive rows of the same group (the group is the id of
    # the turn's first answer; NULL: the row is its own group). Only active rows form the chat.
    db.execute("ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE conversations ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE messages ADD COLUMN model TEXT")
    db.execute("ALTER TABLE messages ADD COLUMN version_group INTEGER")
    db.execute("ALTER TABLE messages ADD COLUMN active INTEGER NOT NULL DEFAULT 1")
    db.execute("CREATE INDEX messages_by_version_group ON messages(version_group)")


def _migration_4(db: sqlite3.Connection) -> None:
    # Tool calls of an assistant turn, one row per call, with the text of the step that made it
    # (so the history sent later can be rebuilt step by step).
    _execute_all(
        db,
        """
        CREATE TABLE tool_calls (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            call_index INTEGER NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            server TEXT NOT NULL DEFAULT '',
            tool TEXT NOT NULL DEFAULT '',
            arguments TEXT NOT NULL DEFAULT '{}',
            raw TEXT NOT NULL DEFAULT '',
            result TEXT NOT NULL DEFAULT '',
            images TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL DEFAULT 'running',
            duration_s REAL NOT NULL DEFAULT 0,
            step_answer TEXT NOT NULL DEFAULT '',
            step_thinking TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (message_id, step, call_index)
        )
        """,
    )


# Index i holds the step from version i to i + 1. Append only: never edit a shipped step.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_1, _migration_2, _migration_3, _migration_4)
SCHEMA_VERSION = len(MIGRATIONS)


class ConversationStore:
    """Conversations and their messages, persisted as soon as they change."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we commit explicitly, one transaction per change.
            self._db = sqlite3.connect(str(self.path), isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives an app crash (only a power cut can lose the last commit).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"The conversation database {self.path} cannot be opened: {error}.") from error

    # ----------------------------------------------------------------- schema
    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        if self._db.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 0:
            self._db.execute("INSERT INTO schema_version (version) VALUES (0)")
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The conversation database {self.path} was written by a newer version of Qwen Desk "
                f"(schema {version}, this app knows {SCHEMA_VERSION}). Update the app to open it."
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                MIGRATIONS[target - 1](self._db)
                self._db.execute("UPDATE schema_version SET version = ?", (target,))

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------- conversations
    def create_conversation(self, title: str = DEFAULT_TITLE, model: Optional[str] = None) -> Conversation:
        now = self._clock()
        conversation = Conversation(uuid.uuid4().hex, title, now, now, model)
        with self._transaction():
            self._db.execute(
                "INSERT INTO conversations (id, title, created_at, updated_at, model) VALUES (?, ?, ?, ?, ?)",
                (conversation.id, title, now, now, model),
            )
        return conversation

    def conversation(self, conversation_id: str) -> Optional[Conversation]:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return _conversation(row) if row else None

    def conversations(self, search: str = "") -> list[Conversation]:
        """Pinned first, then newest first; ``search`` matches titles and message text,
        case-insensitively."""
        if not search.strip():
            rows = self._db.execute(
                "SELECT * FROM conversations ORDER BY pinned DESC, updated_at DESC, rowid DESC")
        else:
            pattern = "%" + _escape_like(search.strip()) + "%"
            rows = self._db.execute(
                """
                SELECT * FROM conversations c
                WHERE c.title LIKE :p ESCAPE '\\'
                   OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id
                              AND (m.content LIKE :p ESCAPE '\\'))
                ORDER BY pinned DESC, updated_at DESC, rowid DESC
                """,
                {"p": pattern},
            )
        return [_conversation(row) for row in rows]

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        title = " ".join(title.split()) or DEFAULT_TITLE
        with self._transaction():
            self._db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_conversation_model(self, conversation_id: str, model: Optional[str]) -> None:
        with self._transaction():
            self._db.execute("UPDATE conversations SET model = ? WHERE id = ?", (model, conversation_id))

    def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        with self._transaction():
            self._db.execute("UPDATE conversations SET pinned = ? WHERE id = ?", (int(pinned), conversation_id))

    def set_conversation_settings(self, conversation_id: str, settings: dict[str, Any]) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE conversations SET settings = ? WHERE id = ?", (json.dumps(settings), conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # --------------------------------------------------------------- messages
    def messages(self, conversation_id: str) -> list[StoredMessage]:
        """The chat as it stands: each answer in the version chosen for it."""
        rows = self._db.execute(
            "SELECT * FROM messages WHERE conversation_id = ? AND active = 1 ORDER BY id", (conversation_id,)
        )
        groups: dict[int, list[int]] = {}
        for group, message_id in self._db.execute(
            "SELECT version_group, id FROM messages WHERE conversation_id = ? AND version_group IS NOT NULL "
            "ORDER BY id", (conversation_id,)
        ):
            groups.setdefault(int(group), []).append(int(message_id))
        return [_message(row, groups) for row in rows]

    def message(self, message_id: int) -> Optional[StoredMessage]:
        row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return None
        group = row["version_group"]
        return _message(row, {group: self._version_ids(group)} if group is not None else {})

    def versions(self, message_id: int) -> list[StoredMessage]:
        """Every version of the answer ``message_id`` is one of, oldest first."""
        message = self.message(message_id)
        if message is None:
            return []
        return [m for m in (self.message(i) for i in (message.version_ids or (message_id,))) if m is not None]

    def _version_ids(self, group: Optional[int]) -> list[int]:
        if group is None:
            return []
        return [int(r[0]) for r in self._db.execute(
            "SELECT id FROM messages WHERE version_group = ? ORDER BY id", (group,))]

    def choose_version(self, message_id: int) -> None:
        """Make ``message_id`` the version of its answer that the chat shows and sends."""
        row = self._db.execute(
            "SELECT conversation_id, version_group FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None or row["version_group"] is None:
            return
        with self._transaction():
            self._db.execute("UPDATE messages SET active = (id = ?) WHERE version_group = ?",
                             (message_id, row["version_group"]))
            self._touch(row["conversation_id"], self._clock())

    def add_message(
        self,
        conversation_id: str,
        role: MessageRole,
        content: str,
        *,
        thinking: str = "",
        status: MessageStatus = "complete",
        stats: Optional[dict[str, Any]] = None,
        attachments: Iterable[Attachment] = (),
        model: Optional[str] = None,
        version_of: Optional[int] = None,
    ) -> StoredMessage:
        """Add a message; ``version_of``: a new version of that answer (regenerate), which
        becomes the one shown while the old one is kept."""
        _check_status(status)
        now = self._clock()
        attachments = tuple(attachments)
        with self._transaction():
            group = None
            if version_of is not None:
                row = self._db.execute(
                    "SELECT version_group FROM messages WHERE id = ? AND conversation_id = ?",
                    (version_of, conversation_id)).fetchone()
                if row is None:
                    raise ValueError(f"No message {version_of} in this conversation to add a version to.")
                group = row[0] if row[0] is not None else version_of
                self._db.execute("UPDATE messages SET version_group = ? WHERE id = ?", (group, version_of))
                self._db.execute("UPDATE messages SET active = 0 WHERE version_group = ?", (group,))
            cursor = self._db.execute(
                """INSERT INTO messages
                   (conversation_id, role, content, thinking, status, stats, attachments, created_at,
                    model, version_group)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    conversation_id,
                    role,
                    content,
                    thinking,
                    status,
                    json.dumps(stats) if stats is not None else None,
                    json.dumps([a.to_json() for a in attachments]),
                    now,
                    model,
                    group,
                ),
            )
            self._touch(conversation_id, now)
        message_id = int(cursor.lastrowid)
        return StoredMessage(
            message_id, conversation_id, role, content, thinking, status, stats, attachments, "", now, model,
            tuple(self._version_ids(group)),
        )

    def update_message(
        self,
        message_id: int,
        *,
        content: Optional[str] = None,
        thinking: Optional[str] = None,
        status: Optional[MessageStatus] = None,
        stats: Optional[dict[str, Any]] = None,
        error: Optional[str] = None,
    ) -> None:
        changes: dict[str, Any] = {}
        if content is not None:
            changes["content"] = content
        if thinking is not None:
            changes["thinking"] = thinking
        if status is not None:
            _check_status(status)
            changes["status"] = status
        if stats is not None:
            changes["stats"] = json.dumps(stats)
        if error is not None:
            changes["error"] = error
        if not changes:
            return
        assignments = ", ".join(f"{column} = :{column}" for column in changes)
        with self._transaction():
            self._db.execute(f"UPDATE messages SET {assignments} WHERE id = :id", {**changes, "id": message_id})
            row = self._db.execute("SELECT conversation_id FROM messages WHERE id = ?", (message_id,)).fetchone()
            if row:
                self._touch(row[0], self._clock())

    def delete_message(self, message_id: int) -> None:
        """Delete one message; a version chosen before it takes its place (a failed answer
        regenerated, which is not worth keeping)."""
        row = self._db.execute(
            "SELECT conversation_id, version_group, active FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            return
        with self._transaction():
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            if row["version_group"] is not None and row["active"]:
                self._db.execute(
                    "UPDATE messages SET active = 1 WHERE id = (SELECT MAX(id) FROM messages WHERE version_group = ?)",
                    (row["version_group"],))
            self._touch(row["conversation_id"], self._clock())

    def delete_messages_from(self, conversation_id: str, message_id: int) -> None:
        """Delete a message and everything after it, every version included (edit-and-resend).
        Versions of an answer are all older than the next message: only the last answer is
        regenerated."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id >= ?", (conversation_id, message_id)
            )
            self._touch(conversation_id, self._clock())

    # ------------------------------------------------------------- tool calls
    def save_tool_call(self, call: "StoredToolCall") -> None:
        """Insert or replace one call (it is saved when it starts and again when it ends)."""
        row = call.to_row()
        with self._transaction():
            self._db.execute(
                f"INSERT OR REPLACE INTO tool_calls ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})", row
            )

    def tool_calls(self, conversation_id: str) -> dict[int, list["StoredToolCall"]]:
        """Each assistant message's calls, in the order they were made."""
        rows = self._db.execute(
            """SELECT t.* FROM tool_calls t JOIN messages m ON m.id = t.message_id
               WHERE m.conversation_id = ? ORDER BY t.message_id, t.step, t.call_index""",
            (conversation_id,),
        )
        calls: dict[int, list[StoredToolCall]] = {}
        for row in rows:
            calls.setdefault(int(row["message_id"]), []).append(StoredToolCall.from_row(row))
        return calls

    def _touch(self, conversation_id: str, now: float) -> None:
        self._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"Unknown message status {status!r}; expected one of {', '.join(STATUSES)}.")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conversation(row: sqlite3.Row) -> Conversation:
    try:
        settings = json.loads(row["settings"] or "{}")
    except ValueError:
        settings = {}  # a damaged value: the app's defaults rather than a chat that won't open
    return Conversation(row["id"], row["title"], row["created_at"], row["updated_at"], row["model"],
                        bool(row["pinned"]), settings if isinstance(settings, dict) else {})


def _message(row: sqlite3.Row, groups: dict[int, list[int]]) -> StoredMessage:
    return StoredMessage(
        id=int(row["id"]),
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        thinking=row["thinking"],
        status=row["status"],
        stats=json.loads(row["stats"]) if row["stats"] else None,
        attachments=tuple(Attachment.from_json(item) for item in json.loads(row["attachments"] or "[]")),
        error=row["error"],
        created_at=row["created_at"],
        model=row["model"],
        version_ids=tuple(groups.get(row["version_group"], ())) if row["version_group"] is not None else (),
    )
