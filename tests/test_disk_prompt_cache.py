"""Prompt caches that survive a restart: written after an answer, restored in a new process to
the same next tokens as a cold prefill; bad files are deleted, never trusted; the budget holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished
from mlx_backend.events import AnswerDelta, SamplingParams
from mlx_backend.loading.loader import load
from tests.support.checkpoints import write_random_checkpoint
from tests.support.paths import REPO_ROOT

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
FIRST = (ChatMessage("system", "You answer briefly. " * 20), ChatMessage("user", "Tell me about caching " * 15))


def second_turn(first_answer: str) -> tuple[ChatMessage, ...]:
    return (*FIRST, ChatMessage("assistant", first_answer), ChatMessage("user", "And after a restart?"))


def run(engine: Engine, messages, conversation: str | None = "chat-1") -> tuple[str, Finished]:
    text, finished = "", None
    request = ChatRequest(messages=messages, conversation_id=conversation, sampling=GREEDY, max_tokens=12, enable_thinking=False)
    for event in engine.stream(request):
        if isinstance(event, AnswerDelta):
            text += event.text
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    return text, finished


# The first process: answer turn one with a disk cache, wait for the write, print the answer.
FIRST_PROCESS = """
import sys
from mlx_backend import Engine
from mlx_backend.loading.loader import load
from tests.test_disk_prompt_cache import FIRST, run
model, tokenizer = load(sys.argv[1])
engine = Engine(model, tokenizer, disk_cache_folder=sys.argv[2])
text, _ = run(engine, FIRST)
engine.disk_cache.flush()
sys.stdout.write(text)
"""


def first_turn_in_another_process(checkpoint: Path, folder: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PROCESS, str(checkpoint), str(folder)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("disk-cache"), tokenizer="qwen3")


@pytest.fixture(scope="module")
def hybrid_checkpoint(tmp_path_factory) -> Path:
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    return write_hybrid_checkpoint(tmp_path_factory.mktemp("disk-cache-next"), kind="next", tokenizer=True)


@pytest.mark.parametrize("which", ["qwen3", "qwen3-next"])
def test_a_restart_restores_the_cache_and_continues_exactly_as_a_cold_prefill(which, checkpoint, hybrid_checkpoint, tmp_path):
    folder = checkpoint if which == "qwen3" else hybrid_checkpoint
    cache_dir = tmp_path / "prompt-cache"
    first_answer = first_turn_in_another_process(folder, cache_dir)
    assert len(list(cache_dir.glob("*.safetensors"))) == 1

    restored = Engine(*load(folder), disk_cache_folder=cache_dir)
    text, finished = run(restored, second_turn(first_answer))
    cold_text, cold = run(Engine(*load(folder)), second_turn(first_answer))
    assert text == cold_text
    # The restored cache served the whole first turn; the cold engine prefilled all of it.
    assert cold.stats.cached_tokens == 0
    assert finished.stats.cached_tokens > finished.stats.prompt_tokens // 2


def test_a_restored_hybrid_cache_goes_back_through_its_snapshots(hybrid_checkpoint, tmp_path):
    """Regenerating the first answer after a restart needs the state before the generation
    prompt: a snapshot, which must come back from disk too."""
    cache_dir = tmp_path / "prompt-cache"
    first_turn_in_another_process(hybrid_checkpoint, cache_dir)
    restored = Engine(*load(hybrid_checkpoint), disk_cache_folder=cache_dir)
    text, finished = run(restored, FIRST)
    assert finished.stats.cached_tokens > 0
    assert text == run(Engine(*load(hybrid_checkpoint)), FIRST)[0]


def _written(engine: Engine, messages, conversation: str) -> Path:
    run(engine, messages, conversation)
    engine.disk_cache.flush()
    path = engine.disk_cache.path_for(conversation)
    assert path.is_file()
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign", "shape"])
def test_a_bad_cache_file_is_deleted_and_the_answer_is_the_cold_one(damage, checkpoint, tmp_path):
    cache_dir = tmp_path / "prompt-cache"
    engine = Engine(*load(checkpoint), disk_cache_folder=cache_dir)
    path = _written(engine, FIRST, "chat-1")
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "foreign":
        # Another model's valid cache file under this conversation's name.
        other = Engine(*load(write_random_checkpoint(tmp_path / "other", tokenizer="qwen3", seed=7)), disk_cache_folder=tmp_path / "x")
        path.write_bytes(_written(other, FIRST, "chat-1").read_bytes())
    elif damage == "shape":
        # The right model's identity, but more key/value heads than it has.
        fewer = Engine(*load(write_random_checkpoint(tmp_path / "wide", tokenizer="qwen3", num_key_value_heads=4)), disk_cache_folder=tmp_path / "y")
        fewer.disk_cache.identity = engine.disk_cache.identity
        path.write_bytes(_written(fewer, FIRST, "chat-1").read_bytes())

    restarted = Engine(*load(checkpoint), disk_cache_folder=cache_dir)
    text, finished = run(restarted, FIRST)
    assert finished.stats.cached_tokens == 0
    assert text == run(Engine(*load(checkpoint)), FIRST)[0]
    restarted.disk_cache.flush()
    # The bad file is gone; the one there now is this answer's own, which loads.
    assert restarted.disk_cache.load("chat-1", restarted._signature(ChatRequest(messages=FIRST))) is not None


def test_the_disk_budget_keeps_the_most_recent_conversations(checkpoint, tmp_path):
    cache_dir = tmp_path / "prompt-cache"
    engine = Engine(*load(checkpoint), disk_cache_folder=cache_dir)
    one = _written(engine, FIRST, "chat-1").stat().st_size
    engine.disk_cache.byte_budget = int(one * 2.5)  # room for two conversations' files
    for name in ("chat-2", "chat-3", "chat-4"):
        _written(engine, FIRST, name)
    kept = {p.name for p in cache_dir.glob("*.safetensors")}
    assert engine.disk_cache.nbytes <= engine.disk_cache.byte_budget
    assert kept == {engine.disk_cache.path_for(c).name for c in ("chat-3", "chat-4")}


def test_forgetting_a_conversation_deletes_its_file_and_clear_deletes_all(checkpoint, tmp_path):
    engine = Engine(*load(checkpoint), disk_cache_folder=tmp_path / "prompt-cache")
    path = _written(engine, FIRST, "chat-1")
    _written(engine, FIRST, "chat-2")
    engine.forget_conversation("chat-1")
    assert not path.exists() and engine.disk_cache.nbytes > 0
    engine.disk_cache.clear()
    assert engine.disk_cache.nbytes == 0


def test_kv_quantized_caches_round_trip(tmp_path):
    # KV quantization needs heads of a multiple of 64 values.
    checkpoint = write_random_checkpoint(tmp_path / "wide-heads", tokenizer="qwen3", head_dim=64)
    cache_dir = tmp_path / "prompt-cache"
    engine = Engine(*load(checkpoint), disk_cache_folder=cache_dir)
    request = ChatRequest(messages=FIRST, conversation_id="q", sampling=GREEDY, max_tokens=6, kv_bits=8, enable_thinking=False)
    list(engine.stream(request))
    engine.disk_cache.flush()
    restarted = Engine(*load(checkpoint), disk_cache_folder=cache_dir)
    entry = restarted.disk_cache.load("q", restarted._signature(request))
    assert entry is not None and type(entry.layers[0]).__name__ == "QuantizedKVCache"
    # A request without KV quantization can't use it (and leaves the file alone).
    assert restarted.disk_cache.load("q", restarted._signature(ChatRequest(messages=FIRST))) is None
    assert restarted.disk_cache.path_for("q").is_file()
