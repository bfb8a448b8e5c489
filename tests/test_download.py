"""Resolving repo ids through the Hugging Face cache, offline errors, progress and cancel,
listing and deleting cached models. No test touches the network (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import hashlib
import importlib
import threading
from pathlib import Path

import pytest
from huggingface_hub import errors as hf_errors
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

from mlx_backend.hub import download
from mlx_backend.hub.download import (
    DownloadCancelled,
    delete_cached_model,
    list_cached_models,
    resolve_model_path,
)
from mlx_backend.errors import DownloadError, ModelLoadError
from mlx_backend.loading.loader import load
from tests.support.checkpoints import write_random_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def add_to_cache(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """Lay ``source``'s files out as huggingface_hub does: content-addressed blobs, a snapshot
    of relative symlinks to them, and refs/main naming the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def blobs_size(cache: Path, repo_id: str) -> int:
    blobs = cache / ("models--" + repo_id.replace("/", "--")) / "blobs"
    return sum(p.stat().st_size for p in blobs.iterdir())


# -- resolving ---------------------------------------------------------------------------------------


def test_local_folder_is_used_as_is(tmp_path):
    assert resolve_model_path(tmp_path) == tmp_path
    assert resolve_model_path(str(tmp_path)) == tmp_path


@pytest.mark.parametrize("text", ["/no/such/model/folder", "./missing-model", "not a repo"])
def test_missing_local_path_is_not_mistaken_for_a_repo(text):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path(text)


def test_offline_unknown_repo_names_the_repo(hf_cache):
    with pytest.raises(DownloadError) as caught:
        resolve_model_path("nobody/Qwen3-does-not-exist-4bit")
    message = str(caught.value)
    assert "nobody/Qwen3-does-not-exist-4bit" in message
    assert "offline" in message and "not in the local cache" in message
    with pytest.raises(DownloadError, match="nobody/Qwen3-does-not-exist-4bit"):
        load("nobody/Qwen3-does-not-exist-4bit")


def test_cached_repo_resolves_offline_and_loads(tmp_path, hf_cache):
    snapshot = add_to_cache(hf_cache, "mlx-community/Qwen3-tiny", write_random_checkpoint(tmp_path / "src"))
    calls = []

    assert resolve_model_path("mlx-community/Qwen3-tiny", progress=lambda *a: calls.append(a)) == snapshot
    model, tokenizer = load("mlx-community/Qwen3-tiny")
    assert model.load_info.path == snapshot
    assert tokenizer.encode("Hello")
    assert calls == []  # nothing was downloaded


def test_incomplete_cached_snapshot_is_not_used(tmp_path, hf_cache):
    source = write_random_checkpoint(tmp_path / "src", shards=2)
    snapshot = add_to_cache(hf_cache, "mlx-community/Qwen3-partial", source)
    (snapshot / "model-00002-of-00002.safetensors").unlink()

    with pytest.raises(DownloadError, match="mlx-community/Qwen3-partial"):
        resolve_model_path("mlx-community/Qwen3-partial")


# -- downloading (huggingface_hub's snapshot_download replaced by a stand-in) --------------------------


class FakeHub:
    """Drives ``tqdm_class`` the way snapshot_download does: a transfer bar and a bytes-written
    bar whose total grows as each file starts, then links the snapshot once every file is done."""

    def __init__(self, cache: Path, source: Path, *, chunk: int = 4096, on_update=None):
        self.cache, self.source, self.chunk, self.on_update = cache, source, chunk, on_update
        self.total = sum(p.stat().st_size for p in source.iterdir())

    def __call__(self, repo_id, *, allow_patterns, cache_dir, local_files_only=False, tqdm_class=None):
        assert Path(cache_dir) == self.cache
        assert "*.safetensors" in allow_patterns and "*.bin" not in allow_patterns
        if local_files_only:
            raise LocalEntryNotFoundError("not cached yet")
        tqdm_class(desc="Downloading bytes", total=0, initial=0, unit="B", unit_scale=True)
        written = tqdm_class(desc="Reconstructing (incomplete total...)", total=0, initial=0, unit="B")
        for file in sorted(self.source.iterdir()):
            size = file.stat().st_size
            written.total += size
            for start in range(0, size, self.chunk):
                written.update(min(self.chunk, size - start))
                if self.on_update:
                    self.on_update()
        return str(add_to_cache(self.cache, repo_id, self.source))


def test_download_reports_progress_and_lands_in_the_cache(tmp_path, hf_cache, monkeypatch):
    fake = FakeHub(hf_cache, write_random_checkpoint(tmp_path / "src"))
    monkeypatch.setattr(download, "snapshot_download", fake)
    calls: list[tuple[int, int]] = []

    path = resolve_model_path("mlx-community/Qwen3-new", progress=lambda d, t: calls.append((d, t)))

    assert path == hf_cache / "models--mlx-community--Qwen3-new" / "snapshots" / COMMIT
    assert len(calls) > 3
    assert calls[-1] == (fake.total, fake.total)
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(calls, calls[1:]))
    assert all(done <= total for done, total in calls)


def test_cancel_stops_the_download(tmp_path, hf_cache, monkeypatch):
    cancel = threading.Event()
    updates = []

    def cancel_after_three():
        updates.append(1)
        if len(updates) == 3:
            cancel.set()

    fake = FakeHub(hf_cache, write_random_checkpoint(tmp_path / "src"), on_update=cancel_after_three)
    monkeypatch.setattr(download, "snapshot_download", fake)

    with pytest.raises(DownloadCancelled, match="mlx-community/Qwen3-new was cancelled"):
        resolve_model_path("mlx-community/Qwen3-new", cancel=cancel)
    assert len(updates) == 3
    assert list_cached_models() == []  # nothing linked into a snapshot


def test_download_that_is_not_a_complete_model_is_an_error(tmp_path, hf_cache, monkeypatch):
    source = write_random_checkpoint(tmp_path / "src", shards=2)
    (source / "model-00001-of-00002.safetensors").unlink()
    monkeypatch.setattr(download, "snapshot_download", FakeHub(hf_cache, source))

    with pytest.raises(DownloadError, match="not a usable model.*1 of 2 weight shards are missing"):
        resolve_model_path("someone/Qwen3-broken")


def test_unknown_repo_online(hf_cache, monkeypatch):
    def not_found(repo_id, *, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        # huggingface_hub's HTTP client (httpx or its fork, by version) builds the response.
        http = importlib.import_module(hf_errors.Response.__module__.split(".")[0])
        request = http.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
        raise RepositoryNotFoundError("404", response=http.Response(404, request=request))

    monkeypatch.setattr(download, "snapshot_download", not_found)
    with pytest.raises(DownloadError, match="Qwen/Qwen3-Typo was not found on Hugging Face"):
        resolve_model_path("Qwen/Qwen3-Typo")


# -- the cache as a model list --------------------------------------------------------------------------


def test_list_and_delete_cached_models(tmp_path, hf_cache):
    add_to_cache(hf_cache, "mlx-community/Qwen3-dense", write_random_checkpoint(tmp_path / "dense"))
    add_to_cache(hf_cache, "mlx-community/Qwen3-moe", write_random_checkpoint(tmp_path / "moe", moe=True))
    add_to_cache(
        hf_cache, "meta/Llama-tiny", write_random_checkpoint(tmp_path / "llama", model_type="llama")
    )
    broken = add_to_cache(
        hf_cache, "someone/Qwen3-broken", write_random_checkpoint(tmp_path / "broken", shards=2)
    )
    (broken / "model-00002-of-00002.safetensors").unlink()
    no_config = tmp_path / "partial"
    no_config.mkdir()
    (no_config / "vocab.json").write_text("{}")
    add_to_cache(hf_cache, "someone/Qwen3-started", no_config)

    models = {m.repo_id: m for m in list_cached_models()}

    assert sorted(models) == [
        "mlx-community/Qwen3-dense",
        "mlx-community/Qwen3-moe",
        "someone/Qwen3-broken",
        "someone/Qwen3-started",
    ]
    dense = models["mlx-community/Qwen3-dense"]
    assert dense.complete and dense.model_type == "qwen3"
    assert dense.path == hf_cache / "models--mlx-community--Qwen3-dense" / "snapshots" / COMMIT
    assert dense.size_bytes == blobs_size(hf_cache, "mlx-community/Qwen3-dense")
    assert models["mlx-community/Qwen3-moe"].model_type == "qwen3_moe"
    assert not models["someone/Qwen3-broken"].complete
    assert not models["someone/Qwen3-started"].complete
    assert models["someone/Qwen3-started"].model_type is None

    expected_freed = blobs_size(hf_cache, "someone/Qwen3-broken") + len(COMMIT)  # + refs/main
    assert delete_cached_model("someone/Qwen3-broken") == expected_freed
    assert not (hf_cache / "models--someone--Qwen3-broken").exists()
    assert "someone/Qwen3-broken" not in {m.repo_id for m in list_cached_models()}
    assert (hf_cache / "models--meta--Llama-tiny").exists()  # others untouched


def test_delete_unknown_model(hf_cache):
    with pytest.raises(DownloadError, match="not in the model cache"):
        delete_cached_model("nobody/Qwen3-missing")
    with pytest.raises(DownloadError, match="not a Hugging Face repo id"):
        delete_cached_model("../../etc")


def test_empty_or_missing_cache_lists_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "never-created"))
    assert list_cached_models() == []


def test_cached_2026_qwen_models_are_listed(tmp_path, hf_cache):
    import pytest

    from tests.support.hybrid_checkpoints import FAMILY, hybrid_fixtures_available

    if not hybrid_fixtures_available():
        pytest.skip("shared fixtures missing")
    releases = {"Qwen3.5-9B": "qwen3_5", "Qwen3.5-35B-A3B": "qwen3_5_moe",
                "Qwen3-Next-80B-A3B-Instruct": "qwen3_next"}
    for name in releases:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_bytes((FAMILY / name / "config.json").read_bytes())
        add_to_cache(hf_cache, f"mlx-community/{name}-4bit", folder)
    add_to_cache(hf_cache, "meta/Llama-tiny", write_random_checkpoint(tmp_path / "llama", model_type="llama"))

    models = {m.repo_id: m.model_type for m in list_cached_models()}
    assert models == {f"mlx-community/{name}-4bit": kind for name, kind in releases.items()}


def test_the_cache_lists_every_model_type_the_loader_runs():
    from mlx_backend.hub.download import QWEN3_MODEL_TYPES
    from mlx_backend.loading.loader import ARCHITECTURES

    assert QWEN3_MODEL_TYPES == frozenset(ARCHITECTURES)
