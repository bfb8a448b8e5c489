"""Session-wide tiny checkpoints for every test module (import these names in conftest.py).

Checkpoints are written once per test session and must be treated as read-only; a test that
wants to damage or edit a checkpoint writes its own with ``write_random_checkpoint``. Loading a
model from them takes milliseconds, so model fixtures are per test (a test may change a
model's rope or quantize it without affecting others).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.checkpoints import write_random_checkpoint
from tests.support.tokenizers import QWEN3_FIXTURES_MISSING_REASON, qwen3_fixtures_available


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dense Qwen3 (hidden 64, 2 layers) with the tiny tokenizer, fp32."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-dense"))


@pytest.fixture(scope="session")
def tiny_moe_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen3-MoE (4 experts, top-2) with the tiny tokenizer, fp32."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-moe"), moe=True)


@pytest.fixture(scope="session")
def qwen3_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dense tiny Qwen3 with the real Qwen3 tokenizer (hybrid template, vocab 151936)."""
    if not qwen3_fixtures_available():
        pytest.skip(QWEN3_FIXTURES_MISSING_REASON)
    return write_random_checkpoint(tmp_path_factory.mktemp("qwen3-dense"), tokenizer="qwen3")


@pytest.fixture
def tiny_model(tiny_checkpoint: Path):
    """(model, tokenizer) freshly loaded from ``tiny_checkpoint``."""
    from mlx_backend.loading.loader import load

    return load(tiny_checkpoint)


@pytest.fixture
def tiny_moe_model(tiny_moe_checkpoint: Path):
    """(model, tokenizer) freshly loaded from ``tiny_moe_checkpoint``."""
    from mlx_backend.loading.loader import load

    return load(tiny_moe_checkpoint)
