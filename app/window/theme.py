"""Light and dark looks that follow the OS (or the user's choice), as palettes plus one stylesheet.

Colours come from a small set of tokens so every widget agrees; the stylesheet addresses widgets
by object name, leaving native controls (menus, dialogs, scroll bars on macOS) alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from app.settings import Theme


@dataclass(frozen=True)
class Tokens:
    dark: bool
    window: str
    sidebar: str
    surface: str
    text: str
    muted: str
    faint: str
    border: str
    accent: str
    accent_text: str
    user_bubble: str
    selection: str
    hover: str
    danger: str
    success: str
    warning: str


LIGHT = Tokens(
    dark=False,
    window="#ffffff",
    sidebar="#f5f5f7",
    surface="#ffffff",
    text="#1d1d1f",
    muted="#6e6e73",
    faint="#aeaeb2",
    border="#d9d9de",
    accent="#0a6cff",
    accent_text="#ffffff",
    user_bubble="#eef1f6",
    selection="#e3e8f0",
    hover="#ebebef",
    danger="#d70015",
    success="#1a8f3c",
    warning="#b25e00",
)
DARK = Tokens(
    dark=True,
    window="#1c1c1e",
    sidebar="#232325",
    surface="#2a2a2d",
    text="#f2f2f7",
    muted="#a1a1a6",
    faint="#636366",
    border="#3a3a3d",
    accent="#3d8bff",
    accent_text="#ffffff",
    user_bubble="#2f3136",
    selection="#34373d",
    hover="#2e2e31",
    danger="#ff6961",
    success="#4cd964",
    warning="#ffb340",
)


def system_is_dark() -> bool:
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown (some Linux desktops): judge the palette the platform gave us.
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def tokens_for(theme: Theme) -> Tokens:
    if theme == "dark":
        return DARK
    if theme == "light":
        return LIGHT
    return DARK if system_is_dark() else LIGHT


def palette_for(tokens: Tokens) -> QPalette:
    palette = QPalette()
    roles = QPalette.ColorRole
    palette.setColor(roles.Window, QColor(tokens.window))
    palette.setColor(roles.WindowText, QColor(tokens.text))
    palette.setColor(roles.Base, QColor(tokens.surface if tokens.dark else "#ffffff"))
    palette.setColor(roles.AlternateBase, QColor(tokens.sidebar))
    palette.setColor(roles.Text, QColor(tokens.text))
    palette.setColor(roles.Button, QColor(tokens.surface if tokens.dark else "#f5f5f7"))
    palette.setColor(roles.ButtonText, QColor(tokens.text))
    palette.setColor(roles.Highlight, QColor(tokens.accent))
    palette.setColor(roles.HighlightedText, QColor(tokens.accent_text))
    palette.setColor(roles.Link, QColor(tokens.accent))
    palette.setColor(roles.PlaceholderText, QColor(tokens.faint))
    palette.setColor(roles.ToolTipBase, QColor(tokens.surface))
    palette.setColor(roles.ToolTipText, QColor(tokens.text))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(tokens.faint))
    return palette


def stylesheet(t: Tokens) -> str:
    track = t.border if t.dark else t.hover  # an empty progress track, visible on a dark surface
    return f"""
    QMainWindow, #ChatPane, #Transcript, #TranscriptContent {{ background: {t.window}; }}
    #Sidebar {{ background: {t.sidebar}; border-right: 1px solid {t.border}; }}
    #SidebarSearch {{
        background: {t.window if not t.dark else t.surface}; border: 1px solid {t.border};
        border-radius: 7px; padding: 5px 8px; color: {t.text};
    }}
    #ConversationList {{ background: transparent; border: none; outline: none; }}
    #ConversationList::item {{ padding: 7px 10px; border-radius: 7px; margin: 1px 6px; color: {t.text}; }}
    #ConversationList::item:hover {{ background: {t.hover}; }}
    #ConversationList::item:selected {{ background: {t.selection}; color: {t.text}; }}
    #SectionLabel {{ color: {t.muted}; font-size: 11px; font-weight: 600; padding: 10px 16px 2px 16px; }}
    #NewChatButton {{
        background: transparent; border: 1px solid {t.border}; border-radius: 7px;
        padding: 5px 10px; color: {t.text};
    }}
    #NewChatButton:hover {{ background: {t.hover}; }}
    #TopBar {{ background: {t.window}; border-bottom: 1px solid {t.border}; }}
    #ModelPicker {{
        border: 1px solid transparent; border-radius: 7px; padding: 4px 10px;
        background: transparent; color: {t.text}; font-weight: 600;
    }}
    #ModelPicker:hover, #ModelPicker:focus {{ background: {t.hover}; border-color: {t.border}; }}
    #ThinkingToggle {{
        border: 1px solid {t.border}; border-radius: 11px; padding: 0px 12px; color: {t.muted};
        background: transparent; min-height: 22px; max-height: 22px;
    }}
    #ThinkingToggle:hover {{ background: {t.hover}; }}
    #ThinkingToggle:checked {{ color: {t.accent}; border-color: {t.accent}; background: {t.selection}; }}
    #ReasoningButton {{
        border: 1px solid {t.border}; border-radius: 11px; padding: 0px 10px; color: {t.text};
        background: transparent; min-height: 22px; max-height: 22px;
    }}
    #ReasoningButton:hover {{ background: {t.hover}; }}
    #ReasoningButton[dimmed="true"] {{ color: {t.faint}; }}
    #ReasoningButton::menu-indicator {{ image: none; width: 0px; }}
    #UserBubble {{ background: {t.user_bubble}; border-radius: 16px; }}
    #MessageActions QToolButton, #ThinkingHeader {{
        border: none; background: transparent; color: {t.muted}; padding: 2px 6px; border-radius: 5px;
    }}
    #ThinkingHeader {{ padding-left: 0px; }}
    #CopyCodeButton {{
        border: none; background: transparent; color: {t.muted}; padding: 1px 6px; border-radius: 5px;
        font-size: 11px;
    }}
    #CopyCodeButton:hover {{ background: {t.hover}; color: {t.text}; }}
    #MessageActions QToolButton:hover, #ThinkingHeader:hover {{ background: {t.hover}; color: {t.text}; }}
    #ThinkingBody {{ border-left: 2px solid {t.border}; margin-left: 8px; padding-left: 10px; color: {t.muted}; }}
    #StatsLabel, #MutedLabel {{ color: {t.faint}; font-size: 11px; }}
    #VersionSwitcher QToolButton {{
        border: none; background: transparent; color: {t.muted}; padding: 0px 5px; border-radius: 5px;
        font-size: 15px;
    }}
    #VersionSwitcher QToolButton:hover {{ background: {t.hover}; color: {t.text}; }}
    #VersionSwitcher QToolButton:disabled {{ color: {t.faint}; }}
    #VersionLabel {{ color: {t.muted}; font-size: 12px; }}
    #ChatSettingsButton {{
        border: 1px solid {t.border}; border-radius: 11px; padding: 0px 10px; color: {t.text};
        background: transparent; min-height: 22px; max-height: 22px;
    }}
    #ChatSettingsButton:hover {{ background: {t.hover}; }}
    #WarningNote {{ color: {t.warning}; font-size: 12px; }}
    #SectionTitle {{ color: {t.text}; font-weight: 600; }}
    #StatusNote {{ color: {t.warning}; font-size: 12px; }}
    #ErrorNote {{ color: {t.danger}; font-size: 12px; }}
    #PrefillLabel {{ color: {t.muted}; font-size: 12px; }}
    #PrefillBar {{ border: none; background: {track}; border-radius: 2px; max-height: 4px; }}
    #PrefillBar::chunk {{ background: {t.accent}; border-radius: 2px; }}
    #Composer {{
        background: {t.surface}; border: 1px solid {t.border}; border-radius: 14px;
    }}
    #ComposerEdit {{ background: transparent; border: none; color: {t.text}; }}
    #SendButton {{
        background: {t.accent}; color: {t.accent_text}; border: none; border-radius: 15px;
        font-weight: 700; font-size: 15px;
    }}
    #SendButton:disabled {{ background: {t.faint}; }}
    #SendButton[stop="true"] {{ background: {t.text}; color: {t.window}; font-size: 11px; }}
    #AttachmentChip {{
        background: {t.user_bubble if not t.dark else t.selection}; border: 1px solid {t.border};
        border-radius: 8px; padding: 2px 8px; color: {t.text};
    }}
    #ComposerHint {{ color: {t.faint}; font-size: 11px; }}
    #DocumentPlanPanel, #DocumentProgressPanel {{
        background: {t.surface}; border: 1px solid {t.border}; border-radius: 12px;
    }}
    #DocumentPlanPanel QLabel, #DocumentProgressPanel QLabel {{ background: transparent; }}
    #PanelTitle {{ color: {t.text}; font-weight: 600; }}
    #PlanHeadline {{ color: {t.text}; }}
    #PlanDetails {{ color: {t.muted}; font-size: 12px; }}
    #SummaryBar {{ border: none; background: {track}; border-radius: 3px; max-height: 6px; min-height: 6px; }}
    #SummaryBar::chunk {{ background: {t.accent}; border-radius: 3px; }}
    #DocumentProgressPanel #PrefillBar::chunk {{ background: {t.muted}; }}
    #PrimaryButton {{
        background: {t.accent}; color: {t.accent_text}; border: none; border-radius: 7px;
        padding: 5px 16px; font-weight: 600;
    }}
    #PrimaryButton:disabled {{ background: {t.faint}; }}
    #SecondaryButton {{
        background: transparent; color: {t.text}; border: 1px solid {t.border}; border-radius: 7px;
        padding: 4px 14px;
    }}
    #SecondaryButton:hover {{ background: {t.hover}; }}
    #SecondaryButton:disabled {{ color: {t.faint}; }}
    #SettingsHint {{ color: {t.muted}; font-size: 11px; }}
    #EmptyTitle {{ color: {t.text}; font-size: 22px; font-weight: 600; }}
    #EmptySubtitle {{ color: {t.muted}; font-size: 13px; }}
    QStatusBar {{ background: {t.sidebar}; color: {t.muted}; border-top: 1px solid {t.border}; }}
    QStatusBar QLabel {{ color: {t.muted}; padding: 0 6px; }}
    #Badge_fits {{ color: {t.success}; border: 1px solid {t.success}; border-radius: 8px; padding: 1px 8px; }}
    #Badge_tight {{ color: {t.warning}; border: 1px solid {t.warning}; border-radius: 8px; padding: 1px 8px; }}
    #Badge_wont_fit {{ color: {t.danger}; border: 1px solid {t.danger}; border-radius: 8px; padding: 1px 8px; }}
    #ManagerError {{ color: {t.danger}; }}
    #ManagerRow {{ border: none; border-bottom: 1px solid {t.border}; background: transparent; }}
    #ManagerRowTitle {{ font-weight: 600; color: {t.text}; }}
    #ManagerRowDetail {{ color: {t.muted}; font-size: 11px; }}
    """


class ThemeManager(QObject):
    """Applies the chosen theme and re-applies it when the OS switches light/dark."""

    changed = Signal(object)  # Tokens

    def __init__(self, app: QApplication, theme: Theme = "system") -> None:
        super().__init__(app)
        self._app = app
        self._theme: Theme = theme
        self.tokens: Tokens = LIGHT
        app.styleHints().colorSchemeChanged.connect(lambda *_: self.apply())
        self.apply()

    def set_theme(self, theme: Theme) -> None:
        self._theme = theme
        self.apply()

    def apply(self) -> None:
        self.tokens = tokens_for(self._theme)
        self._app.setPalette(palette_for(self.tokens))
        self._app.setStyleSheet(stylesheet(self.tokens))
        self.changed.emit(self.tokens)
