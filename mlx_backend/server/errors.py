"""Error bodies in each protocol's own shape, so each official client raises its matching class.

Paths under ``/v1/messages`` speak Anthropic; everything else speaks OpenAI. The security layer
(``security.py``) and the app's 404/405 answers use these, and route handlers can too.
"""

from __future__ import annotations

from typing import Optional

from starlette.responses import JSONResponse

# status -> (OpenAI "type", OpenAI "code", Anthropic "type"). Both clients pick the exception
# class from the status; the types are what each service itself sends for that status.
_KINDS: dict[int, tuple[str, Optional[str], str]] = {
    400: ("invalid_request_error", None, "invalid_request_error"),
    401: ("invalid_request_error", "invalid_api_key", "authentication_error"),
    403: ("permission_error", "forbidden", "permission_error"),
    404: ("invalid_request_error", "not_found", "not_found_error"),
    405: ("invalid_request_error", "method_not_allowed", "invalid_request_error"),
    413: ("invalid_request_error", "request_too_large", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate_limit_error"),
    500: ("server_error", None, "api_error"),
    503: ("server_error", "unavailable", "overloaded_error"),
}


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


def openai_error_body(message: str, kind: str = "invalid_request_error", code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def anthropic_error_body(message: str, kind: str = "invalid_request_error") -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(path: str, status: int, message: str, *, kind: Optional[str] = None, code: Optional[str] = None) -> dict:
    """The error body for ``path``'s protocol; ``kind``/``code`` override the status's defaults."""
    openai_kind, openai_code, anthropic_kind = _KINDS.get(status, _KINDS[500 if status >= 500 else 400])
    if is_anthropic_path(path):
        return anthropic_error_body(message, kind or anthropic_kind)
    return openai_error_body(message, kind or openai_kind, code if code is not None else openai_code)


def error_response(path: str, status: int, message: str, *, kind: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message, kind=kind, code=code), status_code=status, headers=headers)
