"""The package root is the stable API: it alone loads a checkpoint and streams a reply, and
its plain-data half (requests, events, errors) never pulls MLX in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mlx_backend
from tests.support.model_fixtures import tiny_checkpoint  # noqa: F401
from tests.support.paths import REPO_ROOT


def test_every_exported_name_resolves():
    missing = [name for name in mlx_backend.__all__ if not hasattr(mlx_backend, name)]
    assert missing == []
    with pytest.raises(AttributeError):
        mlx_backend.no_such_name  # noqa: B018


def test_root_names_load_a_checkpoint_and_stream_a_reply(tiny_checkpoint: Path):
    from mlx_backend import (
        AnswerDelta,
        ChatMessage,
        ChatRequest,
        Engine,
        Finished,
        GenerationStats,
        PrefillProgress,
        SamplingParams,
        ThinkingDelta,
        load,
    )

    model, tokenizer = load(tiny_checkpoint)
    engine = Engine(model, tokenizer)
    request = ChatRequest(
        messages=(ChatMessage("user", "Say something."),),
        sampling=SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
        max_tokens=5,
        enable_thinking=False,
    )
    events = list(engine.stream(request))

    assert any(isinstance(event, PrefillProgress) for event in events)
    text = "".join(e.text for e in events if isinstance(e, (AnswerDelta, ThinkingDelta)))
    assert text
    done = events[-1]
    assert isinstance(done, Finished) and isinstance(done.stats, GenerationStats)
    assert done.reason == "length" and done.stats.generation_tokens == 5
    # Engine.load is the same path in one call: same checkpoint, same greedy reply.
    again = list(Engine.load(tiny_checkpoint).stream(request))
    assert again[:-1] == events[:-1]


def test_errors_are_exported_from_the_root(tmp_path: Path):
    from mlx_backend import ModelLoadError, QwenDeskError, load

    with pytest.raises(ModelLoadError) as caught:
        load(tmp_path / "missing")
    assert isinstance(caught.value, QwenDeskError)


@pytest.mark.parametrize("statement", [
    "import mlx_backend.events",
    "from mlx_backend import ChatRequest, AnswerDelta, Event, QwenDeskError",
])
def test_plain_data_imports_without_mlx(statement: str):
    probe = (
        f"{statement}\n"
        "import sys\n"
        "loaded = sorted(m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm')))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
