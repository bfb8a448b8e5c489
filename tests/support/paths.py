"""Where the shared, read-only test fixtures live (``../shared/fixtures`` beside the checkout)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
QWEN3_TOKENIZER_DIR = SHARED_FIXTURES / "qwen3-tokenizer"
QWEN3_2507_INSTRUCT_DIR = SHARED_FIXTURES / "qwen3-4b-instruct-2507"
