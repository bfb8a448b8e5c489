"""The sidebar: New Chat, a search field, and the conversations, newest first.

Rename in place (double-click, F2 or the context menu); delete with the context menu or the
Delete key, after a confirmation. The list reads from the store; the window decides what a
selection means.
"""

from __future__ import annotations

import time
from typing import Optional

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.date_groups import date_group
from app.chat.escape_clears import EscapeClears
from app.chat.pin_icon import pin_icon
from app.chat.store import Conversation, ConversationStore

ID_ROLE = Qt.ItemDataRole.UserRole
PINNED_ROLE = Qt.ItemDataRole.UserRole + 1


class ConversationList(QWidget):
    conversationSelected = Signal(str)
    newChatRequested = Signal()
    # Emitted after the store changed, so the window can react (e.g. clear a deleted chat).
    conversationDeleted = Signal(str)
    conversationRenamed = Signal(str, str)

    def __init__(self, store: ConversationStore, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("Sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self._store = store
        self._refreshing = False
        # Ask before deleting; tests and scripted callers may switch it off.
        self.confirm_delete = True

        self.new_button = QPushButton("\u270E  New Chat", self)
        self.new_button.setObjectName("NewChatButton")
        self.new_button.setToolTip("New chat (\u2318N)")
        self.new_button.clicked.connect(self.newChatRequested)
        self.search = QLineEdit(self)
        self.search.setObjectName("SidebarSearch")
        self.search.setPlaceholderText("Search")
        self.search.setClearButtonEnabled(True)
        self._escape_clears = EscapeClears(self.search)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(150)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _: self._search_timer.start())

        self.list = QListWidget(self)
        self.list.setObjectName("ConversationList")
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked | QAbstractItemView.EditTrigger.EditKeyPressed
        )
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.currentItemChanged.connect(self._on_current_changed)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.installEventFilter(self)

        top = QHBoxLayout()
        top.setContentsMargins(10, 10, 10, 4)
        top.addWidget(self.new_button)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(top)
        search_row = QHBoxLayout()
        search_row.setContentsMargins(10, 0, 10, 4)
        search_row.addWidget(self.search)
        layout.addLayout(search_row)
        layout.addWidget(self.list, 1)

    # ------------------------------------------------------------------ API
    def refresh(self, select: Optional[str] = None) -> None:
        """Reload from the store, keeping (or setting) the selection."""
        selected = select if select is not None else self.current_id()
        self._refreshing = True
        try:
            self.list.clear()
            now, group = time.time(), None
            for conversation in self._store.conversations(self.search.text()):
                # Pinned chats come first (the store sorts them so) under their own title.
                section = PINNED_SECTION if conversation.pinned else date_group(conversation.updated_at, now)
                if section != group:
                    group = section
                    self.list.addItem(_group_header(group, self.list))
                item = QListWidgetItem(conversation.title)
                item.setData(ID_ROLE, conversation.id)
                item.setToolTip(f"{conversation.title}\n{_when(conversation)}")
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                if conversation.pinned:  # the store lists pinned chats first
                    item.setIcon(pin_icon(self.palette().placeholderText().color()))
                    item.setData(PINNED_ROLE, True)
                self.list.addItem(item)
                if conversation.id == selected:
                    self.list.setCurrentItem(item)
        finally:
            self._refreshing = False

    def current_id(self) -> Optional[str]:
        item = self.list.currentItem()
        return item.data(ID_ROLE) if item is not None else None

    def select(self, conversation_id: Optional[str]) -> None:
        self._refreshing = True
        try:
            self.list.setCurrentItem(None)  # type: ignore[arg-type]
            for row in range(self.list.count()):
                item = self.list.item(row)
                if item.data(ID_ROLE) == conversation_id:
                    self.list.setCurrentItem(item)
                    break
        finally:
            self._refreshing = False

    def _chat_items(self) -> list[QListWidgetItem]:
        items = (self.list.item(row) for row in range(self.list.count()))
        return [item for item in items if item.data(ID_ROLE) is not None]

    def ids(self) -> list[str]:
        return [item.data(ID_ROLE) for item in self._chat_items()]

    def titles(self) -> list[str]:
        return [item.text() for item in self._chat_items()]

    def group_titles(self) -> list[tuple[str, list[str]]]:
        """The sections (Pinned, then dates), in order, each with its chats' titles."""
        groups: list[tuple[str, list[str]]] = []
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(ID_ROLE) is None:
                groups.append((item.text(), []))
            elif groups:
                groups[-1][1].append(item.text())
        return groups

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def rename(self, conversation_id: str, title: str) -> None:
        self._store.rename_conversation(conversation_id, title)
        self.refresh()
        stored = self._store.conversation(conversation_id)
        self.conversationRenamed.emit(conversation_id, stored.title if stored else title)

    def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        self._store.set_pinned(conversation_id, pinned)
        self.refresh()

    def begin_rename(self, conversation_id: Optional[str] = None) -> None:
        conversation_id = conversation_id or self.current_id()
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(ID_ROLE) == conversation_id:
                self.list.editItem(item)
                return

    def delete(self, conversation_id: Optional[str] = None) -> bool:
        conversation_id = conversation_id or self.current_id()
        if not conversation_id:
            return False
        conversation = self._store.conversation(conversation_id)
        if conversation is None:
            return False
        if self.confirm_delete:
            answer = QMessageBox.question(
                self.window(),
                "Delete Chat",
                f"Delete \u201c{conversation.title}\u201d? This can\u2019t be undone.",
                QMessageBox.StandardButton.Cancel | QMessageBox.StandardButton.Yes,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                return False
        self._store.delete_conversation(conversation_id)
        self.refresh()
        self.conversationDeleted.emit(conversation_id)
        return True

    # -------------------------------------------------------------- events
    def _on_current_changed(self, current: Optional[QListWidgetItem], previous: Optional[QListWidgetItem]) -> None:
        if current is not None and current.data(ID_ROLE) is None:
            # A date section's title became current (setCurrentRow, Home): its chat takes over.
            row = self.list.row(current)
            upward = previous is not None and self.list.row(previous) > row
            above, below = range(row - 1, -1, -1), range(row + 1, self.list.count())
            rows = [*above, *below] if upward else [*below, *above]
            chat = next((self.list.item(r) for r in rows if self.list.item(r).data(ID_ROLE) is not None), None)
            if chat is not None:
                self.list.setCurrentItem(chat)
            return
        if not self._refreshing and current is not None:
            self.conversationSelected.emit(current.data(ID_ROLE))

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._refreshing:
            return
        conversation_id = item.data(ID_ROLE)
        stored = self._store.conversation(conversation_id)
        if stored is not None and item.text().strip() and item.text() != stored.title:
            QTimer.singleShot(0, lambda: self.rename(conversation_id, item.text()))
        elif stored is not None and item.text() != stored.title:
            QTimer.singleShot(0, self.refresh)  # an empty title: put the old one back

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if watched is self.list and event.type() == QEvent.Type.KeyPress:
            if event.matches(QKeySequence.StandardKey.Delete) or event.key() == Qt.Key.Key_Backspace:  # type: ignore[attr-defined]
                if self.list.state() != QAbstractItemView.State.EditingState:
                    self.delete()
                    return True
        return False

    def _context_menu(self, position) -> None:
        item = self.list.itemAt(position)
        if item is None or item.data(ID_ROLE) is None:  # nothing, or a date section's title
            return
        menu = self.context_menu(item)
        menu.exec(self.list.viewport().mapToGlobal(position))
        menu.deleteLater()

    def context_menu(self, item: QListWidgetItem) -> QMenu:
        conversation_id = item.data(ID_ROLE)
        menu = QMenu(self)
        pinned = bool(item.data(PINNED_ROLE))
        pin = QAction("Unpin" if pinned else "Pin", menu)
        pin.triggered.connect(lambda: self.set_pinned(conversation_id, not pinned))
        menu.addAction(pin)
        rename = QAction("Rename\u2026", menu)
        rename.triggered.connect(lambda: self.begin_rename(conversation_id))
        delete = QAction("Delete\u2026", menu)
        delete.triggered.connect(lambda: self.delete(conversation_id))
        menu.addAction(rename)
        menu.addSeparator()
        menu.addAction(delete)
        return menu


PINNED_SECTION = "Pinned"


def _group_header(title: str, list_widget: QListWidget) -> QListWidgetItem:
    """A section title: not selectable, so clicks and arrow keys pass over it."""
    item = QListWidgetItem(title)
    item.setFlags(Qt.ItemFlag.NoItemFlags)
    font = list_widget.font()
    font.setPointSizeF(max(font.pointSizeF() * 0.85, 8))
    font.setWeight(QFont.Weight.DemiBold)
    item.setFont(font)
    item.setData(Qt.ItemDataRole.AccessibleTextRole, f"{title} section")
    return item


def _when(conversation: Conversation) -> str:
    return time.strftime("%d %b %Y, %H:%M", time.localtime(conversation.updated_at))
