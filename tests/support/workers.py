"""A WorkerClient with a tiny checkpoint loaded, for pytest-qt suites (Qt imported here)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.worker.worker import WorkerClient


def loaded_worker(qapp, checkpoint: Path, **client_options) -> WorkerClient:
    """Start a worker thread and load ``checkpoint`` on it, pumping Qt events until it has."""
    client = WorkerClient(**client_options)
    loaded = threading.Event()
    client.modelLoaded.connect(lambda info: loaded.set())
    client.load_model(str(checkpoint))
    deadline = time.monotonic() + 60
    while not loaded.is_set() and time.monotonic() < deadline:
        qapp.processEvents()
        time.sleep(0.01)
    assert client.model_info is not None, "the tiny checkpoint did not load"
    return client
