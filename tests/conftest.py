import os
import tempfile

# Qt must never need a display in tests; screenshots use Xvfb through their own script.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the network: model downloads must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No test touches a real user's data or caches (tests that care set their own folder).
os.environ.setdefault("QWEN_DESK_DATA_DIR", tempfile.mkdtemp(prefix="qwen-desk-tests-"))

# Session-scoped tiny random-weight checkpoints (HF layout) shared by every suite.
from tests.support.model_fixtures import (  # noqa: E402,F401
    qwen3_checkpoint,
    tiny_checkpoint,
    tiny_model,
    tiny_moe_checkpoint,
    tiny_moe_model,
)
