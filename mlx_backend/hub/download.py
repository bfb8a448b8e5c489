"""Turn "a folder or a Hugging Face repo id" into a complete local model folder.

Downloads go through huggingface_hub into the standard HF cache (shared with mlx-lm and
transformers), which writes each file as ``*.incomplete`` and links it into the snapshot only
once it is whole. On top of that we verify the snapshot (config, every index shard, no
truncated safetensors) so a half-finished download never passes for a model.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from huggingface_hub import constants, scan_cache_dir, snapshot_download
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.auto import tqdm

from mlx_backend.errors import DownloadError, ModelLoadError
from mlx_backend.loading.checkpoint_files import incomplete_reason

ProgressCallback = Callable[[int, int], None]

# Config, weights and tokenizer files; never pickles (*.bin) or code (*.py).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja"]
# Qwen3, Qwen3.5 / 3.6 / 3.8 (qwen3_5, qwen3_5_moe) and Qwen3-Next: what the loader runs.
QWEN3_MODEL_TYPES = frozenset({"qwen3", "qwen3_moe", "qwen3_5", "qwen3_5_moe", "qwen3_next"})
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DownloadCancelled(DownloadError):
    """The user cancelled a download; the partial files stay as HF's ``.incomplete`` blobs."""


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    path: Path  # the snapshot folder to load
    size_bytes: int  # what deleting it frees
    complete: bool
    model_type: str | None  # None when config.json is not there (a broken download)


def hf_cache_dir() -> Path:
    """The hub cache, honouring HF_HUB_CACHE / HF_HOME set after huggingface_hub was imported."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and ".." not in text


def resolve_model_path(
    path_or_repo: str | Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """A local model folder as is; a repo id from the HF cache, downloading it if needed.

    ``progress(done_bytes, total_bytes)`` is called from download threads while files arrive
    (the total grows as downloads start). Setting ``cancel`` stops the download with
    DownloadCancelled.
    """
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        return local
    text = str(path_or_repo)
    if local.exists():
        raise ModelLoadError(f"{local} is a file; choose the model's folder instead.")
    if isinstance(path_or_repo, Path) or not is_repo_id(text):
        raise ModelLoadError(
            f"The model folder {local} does not exist (and it is not a Hugging Face repo id "
            "like mlx-community/Qwen3-4B-Instruct-2507-4bit)."
        )
    cached = _complete_cached_snapshot(text)
    if cached is not None:
        return cached
    return _download(text, progress=progress, cancel=cancel)


def _complete_cached_snapshot(repo_id: str) -> Path | None:
    """A complete snapshot already in the cache: no network needed (and works offline)."""
    try:
        folder = snapshot_download(
            repo_id,
            allow_patterns=ALLOW_PATTERNS,
            cache_dir=hf_cache_dir(),
            local_files_only=True,
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    folder = Path(folder)
    return folder if incomplete_reason(folder) is None else None


def _download(
    repo_id: str, *, progress: ProgressCallback | None, cancel: threading.Event | None
) -> Path:
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled(f"The download of {repo_id} was cancelled.")
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                allow_patterns=ALLOW_PATTERNS,
                cache_dir=hf_cache_dir(),
                tqdm_class=_progress_bar_class(progress, cancel),
            )
        )
    except _Cancelled:
        raise DownloadCancelled(f"The download of {repo_id} was cancelled.") from None
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
        raise DownloadError(
            f"The model {repo_id} was not found on Hugging Face (the name may be misspelled, "
            "or the repo is private or gated)."
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise DownloadError(
            f"Could not download {repo_id}: Qwen Desk is offline (no internet connection or "
            "HF_HUB_OFFLINE is set) and the model is not in the local cache."
        ) from None
    except HfHubHTTPError as error:
        raise DownloadError(f"Downloading {repo_id} failed: {error}") from None
    except OSError as error:  # connection errors, disk full, permissions
        raise DownloadError(f"Downloading {repo_id} failed: {error}") from None

    reason = incomplete_reason(folder)
    if reason is not None:
        raise DownloadError(f"The download of {repo_id} is not a usable model: {reason}")
    return folder


class _Cancelled(Exception):
    """Raised inside huggingface_hub's worker threads to stop a download."""


def _progress_bar_class(
    progress: ProgressCallback | None, cancel: threading.Event | None
) -> type[tqdm]:
    """A silent tqdm that forwards byte counts to ``progress`` and aborts when ``cancel`` is set.

    snapshot_download creates three bars from it: file count, transferred bytes and bytes
    written; we report the last one (its total covers every file being fetched).
    """

    class ProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = False
            kwargs["file"] = io.StringIO()  # never draw on the terminal
            desc = str(kwargs.get("desc") or "")
            self._reports = kwargs.get("unit") == "B" and not desc.startswith("Downloading")
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            result = super().update(n)
            if self._reports and progress is not None:
                progress(int(self.n), int(self.total or 0))
            return result

    return ProgressBar


def _repo_folder(repo_id: str) -> Path:
    return hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def _snapshot_config(snapshot: Path) -> dict | None:
    try:
        config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def list_cached_models() -> list[CachedModel]:
    """Qwen models (QWEN3_MODEL_TYPES) in the HF cache, complete or not (a broken download can then be deleted)."""
    try:
        cache = scan_cache_dir(hf_cache_dir())
    except CacheNotFound:
        return []
    models = []
    for repo in cache.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        # The revision "main" points at, else the newest one.
        revisions = sorted(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        snapshot = revisions[-1].snapshot_path
        config = _snapshot_config(snapshot)
        model_type = config.get("model_type") if config else None
        if model_type not in QWEN3_MODEL_TYPES and not (
            config is None and "qwen3" in repo.repo_id.lower()
        ):
            continue
        models.append(
            CachedModel(
                repo_id=repo.repo_id,
                path=snapshot,
                size_bytes=repo.size_on_disk,
                complete=incomplete_reason(snapshot) is None,
                model_type=model_type,
            )
        )
    return sorted(models, key=lambda m: m.repo_id.lower())


def delete_cached_model(repo_id: str) -> int:
    """Remove a model (all revisions and partial blobs) from the HF cache; returns bytes freed."""
    if not is_repo_id(repo_id):
        raise DownloadError(f"{repo_id!r} is not a Hugging Face repo id.")
    folder = _repo_folder(repo_id)
    if not folder.is_dir():
        raise DownloadError(f"{repo_id} is not in the model cache.")
    # Snapshots only hold links into blobs/, so counting regular files counts each byte once.
    freed = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    shutil.rmtree(folder)
    return freed
