"""The check every bad-folder test makes: a ModelLoadError in plain words, not a chained crash."""

from __future__ import annotations

import pytest

from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.loader import load_model


def assert_load_error(path, *fragments: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    # A user-facing error, not a chained crash: no traceback context to print.
    assert caught.value.__cause__ is None
    return caught.value
