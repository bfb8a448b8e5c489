"""Errors whose message is fit to show a user as is (no traceback needed)."""


class QwenDeskError(Exception):
    """Base class: ``str(error)`` is a complete, plain-language message."""


class ModelLoadError(QwenDeskError):
    """A model folder or repo could not be loaded (missing/corrupt files, unknown architecture)."""


class DownloadError(QwenDeskError):
    """A model could not be downloaded (offline, unknown repo, cancelled)."""


class RequestError(QwenDeskError):
    """A generation request is malformed (empty messages, unknown role, bad limits)."""


class ContextOverflowError(RequestError):
    """The prompt does not fit the model's context window; nothing is truncated silently."""


class DocumentError(QwenDeskError):
    """A document could not be read (encrypted, scanned, binary, too large, unsupported)."""
