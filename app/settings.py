"""User preferences in QSettings: model, sampling, system prompt, thinking, theme, menu bar.

The native store (macOS: a plist under ~/Library/Preferences) unless QWEN_DESK_DATA_DIR is set,
in which case an INI file beside the data keeps tests and portable setups self-contained.
"""

from __future__ import annotations

import json

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Optional

from PySide6.QtCore import QByteArray, QSettings

from app.paths import settings_file_override
from mlx_backend.events import SamplingParams
from mlx_backend.server.settings import DEFAULT_PORT

if TYPE_CHECKING:
    from app.models.speed_up import SpeedUp

Theme = Literal["system", "light", "dark"]
THEMES: tuple[str, ...] = ("system", "light", "dark")

# Earlier answers' reasoning in the prompt, for templates that offer the choice (Qwen3.6, 3.8):
# "default" leaves it to the template (3.6 drops it, 3.8 keeps it).
HistoryReasoning = Literal["default", "keep", "drop"]
HISTORY_REASONING: tuple[str, ...] = ("default", "keep", "drop")


# Choices for the prompt cache on disk (0 = Off); the default is the engine's
# DEFAULT_DISK_BUDGET_BYTES (not imported: that module loads MLX, which stays off the GUI).
PROMPT_CACHE_BUDGETS: tuple[int, ...] = (0, 2 * 2**30, 8 * 2**30, 32 * 2**30)
DEFAULT_PROMPT_CACHE_BUDGET = 8 * 2**30


@dataclass(frozen=True)
class SamplingPreset:
    key: str
    label: str
    # None: Qwen's recommended values for the thinking mode in effect (decided by the engine).
    params: Optional[SamplingParams]
    description: str


SAMPLING_PRESETS: tuple[SamplingPreset, ...] = (
    SamplingPreset("recommended", "Recommended", None, "Qwen's published settings for the current mode."),
    SamplingPreset(
        "precise",
        "Precise",
        SamplingParams(temperature=0.3, top_p=0.8, top_k=20),
        "Low temperature: focused, repeatable answers.",
    ),
    SamplingPreset(
        "creative",
        "Creative",
        SamplingParams(temperature=1.0, top_p=0.95, top_k=50, presence_penalty=0.5),
        "Higher temperature: more varied writing.",
    ),
)


def sampling_preset(key: str) -> SamplingPreset:
    for preset in SAMPLING_PRESETS:
        if preset.key == key:
            return preset
    return SAMPLING_PRESETS[0]


class Settings:
    """Typed accessors over QSettings; every setter persists immediately."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        if qsettings is None:
            override = settings_file_override()
            qsettings = QSettings(str(override), QSettings.Format.IniFormat) if override else QSettings()
        self._q = qsettings

    def sync(self) -> None:
        self._q.sync()

    # The model last loaded: a local folder or a Hugging Face repo id.
    @property
    def model(self) -> str:
        return str(self._q.value("model/current", "") or "")

    @model.setter
    def model(self, value: str) -> None:
        self._q.setValue("model/current", value)

    # Per model (keyed like ``model``): its speed-up, app/models/speed_up.py's SpeedUp as JSON.
    def speed_up(self, key: str) -> SpeedUp:
        from app.models.speed_up import SpeedUp

        return SpeedUp.from_json(self._speed_ups().get(key))

    def set_speed_up(self, key: str, choice: SpeedUp) -> None:
        choices = self._speed_ups()
        choices[key] = choice.to_json()
        self._q.setValue("model/speed_up", json.dumps(choices, sort_keys=True))

    def _speed_ups(self) -> dict:
        try:
            data = json.loads(str(self._q.value("model/speed_up", "{}") or "{}"))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # Local folders the user added in the model manager.
    @property
    def local_models(self) -> list[str]:
        value = self._q.value("model/local_folders", [])
        if isinstance(value, str):  # QSettings returns a bare string for one-element lists (INI)
            value = [value]
        return [str(v) for v in (value or []) if v]

    @local_models.setter
    def local_models(self, folders: list[str]) -> None:
        self._q.setValue("model/local_folders", list(dict.fromkeys(folders)))

    @property
    def sampling_preset(self) -> str:
        return sampling_preset(str(self._q.value("chat/sampling_preset", "recommended"))).key

    @sampling_preset.setter
    def sampling_preset(self, key: str) -> None:
        self._q.setValue("chat/sampling_preset", sampling_preset(key).key)

    @property
    def system_prompt(self) -> str:
        return str(self._q.value("chat/system_prompt", "") or "")

    @system_prompt.setter
    def system_prompt(self, text: str) -> None:
        self._q.setValue("chat/system_prompt", text)

    # Models with a thinking switch (hybrid Qwen3, Qwen3.5 and later): think before answering.
    # None until the user flips the switch: each model's own default then applies (most think;
    # Qwen's small Qwen3.5 models answer directly).
    @property
    def thinking_choice(self) -> Optional[bool]:
        if not self._q.contains("chat/thinking"):
            return None
        return _as_bool(self._q.value("chat/thinking"))

    @property
    def thinking_enabled(self) -> bool:
        choice = self.thinking_choice
        return True if choice is None else choice

    @thinking_enabled.setter
    def thinking_enabled(self, on: bool) -> None:
        self._q.setValue("chat/thinking", bool(on))

    # The reasoning-effort level asked of templates that take one (Qwen3.8: "xhigh", "medium",
    # "low"); "" leaves it to the template. Kept as the template's word so a model with other
    # levels simply does not match it.
    @property
    def reasoning_effort(self) -> str:
        return str(self._q.value("chat/reasoning_effort", "") or "")

    @reasoning_effort.setter
    def reasoning_effort(self, level: str) -> None:
        self._q.setValue("chat/reasoning_effort", level)

    @property
    def history_reasoning(self) -> HistoryReasoning:
        value = str(self._q.value("chat/history_reasoning", "default"))
        return value if value in HISTORY_REASONING else "default"  # type: ignore[return-value]

    @history_reasoning.setter
    def history_reasoning(self, value: HistoryReasoning) -> None:
        self._q.setValue("chat/history_reasoning", value if value in HISTORY_REASONING else "default")

    @property
    def theme(self) -> Theme:
        value = str(self._q.value("appearance/theme", "system"))
        return value if value in THEMES else "system"  # type: ignore[return-value]

    @theme.setter
    def theme(self, value: Theme) -> None:
        self._q.setValue("appearance/theme", value if value in THEMES else "system")

    # System-wide shortcut for Quick Ask (macOS), e.g. "Alt+Space"; "" turns it off.
    @property
    def quick_ask_shortcut(self) -> str:
        return str(self._q.value("quick_ask/shortcut", "Alt+Space") or "")

    @quick_ask_shortcut.setter
    def quick_ask_shortcut(self, shortcut: str) -> None:
        self._q.setValue("quick_ask/shortcut", shortcut)

    # macOS: live in the menu bar only (no Dock icon; closing the window keeps the app running).
    @property
    def menu_bar_only(self) -> bool:
        return _as_bool(self._q.value("appearance/menu_bar_only", False))

    @menu_bar_only.setter
    def menu_bar_only(self, on: bool) -> None:
        self._q.setValue("appearance/menu_bar_only", bool(on))

    @property
    def window_geometry(self) -> QByteArray:
        value = self._q.value("window/geometry")
        return value if isinstance(value, QByteArray) else QByteArray()

    @window_geometry.setter
    def window_geometry(self, value: QByteArray) -> None:
        self._q.setValue("window/geometry", value)

    @property
    def splitter_state(self) -> QByteArray:
        value = self._q.value("window/splitter")
        return value if isinstance(value, QByteArray) else QByteArray()

    @splitter_state.setter
    def splitter_state(self, value: QByteArray) -> None:
        self._q.setValue("window/splitter", value)

    # The local server (OpenAI / Anthropic compatible) over the model the app has loaded.
    @property
    def server_enabled(self) -> bool:
        return _as_bool(self._q.value("server/enabled", False))

    @server_enabled.setter
    def server_enabled(self, on: bool) -> None:
        self._q.setValue("server/enabled", bool(on))

    @property
    def server_port(self) -> int:
        try:
            port = int(self._q.value("server/port", DEFAULT_PORT))
        except (TypeError, ValueError):
            return DEFAULT_PORT
        return port if 0 < port < 65536 else DEFAULT_PORT

    @server_port.setter
    def server_port(self, port: int) -> None:
        self._q.setValue("server/port", int(port))

    # Off: only apps on this computer (127.0.0.1). On: every interface, behind the API key.
    @property
    def server_allow_network(self) -> bool:
        return _as_bool(self._q.value("server/allow_network", False))

    @server_allow_network.setter
    def server_allow_network(self, on: bool) -> None:
        self._q.setValue("server/allow_network", bool(on))
        if on and not self.server_api_key:
            self.server_api_key = secrets.token_urlsafe(24)  # the network is never open without one

    @property
    def server_api_key(self) -> str:
        return str(self._q.value("server/api_key", "") or "")

    @server_api_key.setter
    def server_api_key(self, key: str) -> None:
        self._q.setValue("server/api_key", key)

    # Prompt caches on disk (fast reopening after a restart): their byte budget, 0 = none kept.
    @property
    def prompt_cache_budget_bytes(self) -> int:
        try:
            value = int(self._q.value("cache/disk_budget_bytes", DEFAULT_PROMPT_CACHE_BUDGET))
        except (TypeError, ValueError):
            return DEFAULT_PROMPT_CACHE_BUDGET
        return value if value >= 0 else DEFAULT_PROMPT_CACHE_BUDGET

    @prompt_cache_budget_bytes.setter
    def prompt_cache_budget_bytes(self, nbytes: int) -> None:
        self._q.setValue("cache/disk_budget_bytes", int(nbytes))

    @property
    def last_conversation(self) -> str:
        return str(self._q.value("chat/last_conversation", "") or "")

    @last_conversation.setter
    def last_conversation(self, conversation_id: str) -> None:
        self._q.setValue("chat/last_conversation", conversation_id)

    # Markdown export: the reasoning as a collapsed <details> block, or left out.
    @property
    def export_reasoning(self) -> bool:
        return _as_bool(self._q.value("export/include_reasoning", True))

    @export_reasoning.setter
    def export_reasoning(self, value: bool) -> None:
        self._q.setValue("export/include_reasoning", bool(value))

    # Where the last export went (the save panel opens there next time).
    @property
    def export_folder(self) -> str:
        return str(self._q.value("export/folder", "") or "")

    @export_folder.setter
    def export_folder(self, folder: str) -> None:
        self._q.setValue("export/folder", folder)

    # Tools (MCP): off until the user turns them on; per-tool "ask" / "always" / "never".
    @property
    def tools_enabled(self) -> bool:
        return _as_bool(self._q.value("tools/enabled", False))

    @tools_enabled.setter
    def tools_enabled(self, on: bool) -> None:
        self._q.setValue("tools/enabled", bool(on))

    @property
    def tool_step_limit(self) -> int:
        try:
            return max(1, min(64, int(self._q.value("tools/step_limit", 8))))
        except (TypeError, ValueError):
            return 8

    @tool_step_limit.setter
    def tool_step_limit(self, steps: int) -> None:
        self._q.setValue("tools/step_limit", max(1, min(64, int(steps))))

    @property
    def tool_permissions(self) -> dict[str, str]:
        """``{"server/tool": "always" | "never"}``; a tool not listed asks first."""
        try:
            data = json.loads(str(self._q.value("tools/permissions", "{}") or "{}"))
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items() if v in ("always", "never")} if isinstance(data, dict) else {}

    def set_tool_permission(self, server: str, tool: str, permission: str) -> None:
        permissions = self.tool_permissions
        permissions.pop(f"{server}/{tool}", None)
        if permission in ("always", "never"):
            permissions[f"{server}/{tool}"] = permission
        self._q.setValue("tools/permissions", json.dumps(permissions, sort_keys=True))


def _as_bool(value: object) -> bool:
    if isinstance(value, str):  # INI files hand booleans back as "true"/"false"
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
