"""An mlx.launch host file, read for the window: the Macs it names, in rank order.

The file is JSON, a list with one entry per rank: ``{"ssh": "mac-studio.local", "ips": [...]}``
(mlx.launch's format; ``mlx.distributed_config`` writes it). ``qwen-desk serve --hosts`` reads it
itself: this only shows the user which Macs will run the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlx_backend.errors import QwenDeskError


@dataclass(frozen=True)
class HostFile:
    path: Path
    hosts: tuple[str, ...]  # each rank's Mac, rank 0 first

    @property
    def count_words(self) -> str:
        return f"{len(self.hosts)} Mac" + ("" if len(self.hosts) == 1 else "s")


def read_host_file(path: str | Path) -> HostFile:
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise QwenDeskError(f"Could not read {path.name}: {error.strerror or error}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise QwenDeskError(f"{path.name} is not an mlx.launch host file (JSON): {error}.") from None
    if not isinstance(entries, list) or not entries:
        raise QwenDeskError(f"{path.name} lists no hosts: mlx.launch expects a JSON list with one entry per Mac.")
    hosts = []
    for index, entry in enumerate(entries):
        name = entry.get("ssh") if isinstance(entry, dict) else entry
        if not isinstance(name, str) or not name.strip():
            raise QwenDeskError(f"Host {index + 1} in {path.name} has no \"ssh\" name.")
        hosts.append(name.strip())
    return HostFile(path, tuple(hosts))
