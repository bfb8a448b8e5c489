"""Wire tools into a window: one ToolService (the app's hub), an approval broker on the window."""

from __future__ import annotations

from typing import Optional

from app.settings import Settings
from app.tools.approval import ApprovalBroker
from app.tools.service import ToolService
from app.tools.turn import ChatTools


def attach_tools(window, settings: Settings, service: Optional[ToolService] = None) -> ChatTools:
    service = service or ToolService()
    broker = ApprovalBroker(settings, window)
    broker.setParent(window)
    tools = ChatTools(service, settings, window.store, broker)
    window.chat.set_tools(tools)
    window.tools = tools
    return tools
