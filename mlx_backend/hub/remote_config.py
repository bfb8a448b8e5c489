"""config.json of any Hugging Face repo, fetched alone, so a model can be judged before download."""

from __future__ import annotations

import json
from typing import Any

from mlx_backend.errors import DownloadError
from mlx_backend.hub.download import QWEN3_MODEL_TYPES, hf_cache_dir, is_repo_id


def fetch_config(repo_id: str) -> dict[str, Any]:
    """Download only ``repo_id``'s config.json (into the HF cache) and return it.

    Raises DownloadError in plain words: not a repo id, not found, offline, not a Qwen model."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id = repo_id.strip()
    if not is_repo_id(repo_id):
        raise DownloadError(
            f"{repo_id!r} is not a Hugging Face repo id. Type it as owner/name, "
            "like mlx-community/Qwen3-4B-Instruct-2507-4bit."
        )
    try:
        path = hf_hub_download(repo_id, "config.json", cache_dir=hf_cache_dir())
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError):
        raise DownloadError(
            f"The model {repo_id} was not found on Hugging Face (the name may be misspelled, "
            "or the repo is private or gated)."
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):  # before its base class, EntryNotFoundError
        raise DownloadError(
            f"Could not check {repo_id}: Qwen Desk is offline (no internet connection or "
            "HF_HUB_OFFLINE is set)."
        ) from None
    except EntryNotFoundError:
        raise DownloadError(f"{repo_id} has no config.json, so it is not a model Qwen Desk can run.") from None
    except (HfHubHTTPError, OSError) as error:
        raise DownloadError(f"Could not check {repo_id}: {error}") from None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DownloadError(f"The config.json of {repo_id} could not be read: {error}") from None
    if not isinstance(config, dict):
        raise DownloadError(f"The config.json of {repo_id} does not hold a JSON object.")
    if config.get("model_type") not in QWEN3_MODEL_TYPES:
        found = config.get("model_type") or "no model_type"
        raise DownloadError(
            f"{repo_id} is a {found} model; Qwen Desk runs Qwen3, Qwen3.5 / 3.6 / 3.8 and "
            "Qwen3-Next models."
        )
    return config
