import os

# Qt must never need a display in tests; screenshots use Xvfb through their own script.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the network: model downloads must fail fast and clearly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
