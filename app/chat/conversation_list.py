"""The sidebar: New Chat, a search field, and the conversations, newest first.

Rename in place (double-click, F2 or the context menu); delete with the context menu or the
Delete key, after a confirmation. The list reads from the store; the window decides what a
selection means.
"""

from __future__ import annotations

import time
from typing import Optional

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
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

from app.chat.escape_clears import EscapeClears
from app.chat.store import Conversation, ConversationStore

ID_ROLE = Qt.ItemDataRole.UserRole


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
            for conversation in self._store.conversations(self.search.text()):
                item = QListWidgetItem(conversation.title)
                item.setData(ID_ROLE, conversation.id)
                item.setToolTip(f"{conversation.title}\n{_when(conversation)}")
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
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

    def ids(self) -> list[str]:
        return [self.list.item(row).data(ID_ROLE) for row in range(self.list.count())]

    def titles(self) -> list[str]:
        return [self.list.item(row).text() for row in range(self.list.count())]

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def rename(self, conversation_id: str, title: str) -> None:
        self._store.rename_conversation(conversation_id, title)
        self.refresh()
        stored = self._store.conversation(conversation_id)
        self.conversationRenamed.emit(conversation_id, stored.title if stored else title)

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
    def _on_current_changed(self, current: Optional[QListWidgetItem], _previous: object) -> None:
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
        if item is None:
            return
        conversation_id = item.data(ID_ROLE)
        menu = QMenu(self)
        rename = QAction("Rename\u2026", menu)
        rename.triggered.connect(lambda: self.begin_rename(conversation_id))
        delete = QAction("Delete\u2026", menu)
        delete.triggered.connect(lambda: self.delete(conversation_id))
        menu.addAction(rename)
        menu.addSeparator()
        menu.addAction(delete)
        menu.exec(self.list.viewport().mapToGlobal(position))


def _when(conversation: Conversation) -> str:
    return time.strftime("%d %b %Y, %H:%M", time.localtime(conversation.updated_at))
