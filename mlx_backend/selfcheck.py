"""Can MLX compute here? One small operation on the device models will run on.

On a Mac that is the GPU through Metal, and MLX only finds out whether it can use it (the
Metal device, its compiled kernels in ``mlx.metallib``) at the first operation. A broken
bundle or a too-old macOS would otherwise surface as a failed or stuck first answer; the
app runs this check at startup instead, and ``qwen-desk self-check`` runs it from a shell
(the macOS workflow runs it in the frozen app). Elsewhere (Linux, CPU) the same operation
runs on the default device, so the check is the same code everywhere.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field

from mlx_backend.errors import QwenDeskError

# MLX's own text when it cannot open its Metal library ("[metal::Device] Failed to load the
# default metallib. ..."); matched to tell a broken bundle from other GPU failures.
METALLIB_FAILURE = "metallib"
# The oldest macOS the MLX wheels support (https://ml-explore.github.io/mlx/build/html/install.html);
# the bundle's LSMinimumSystemVersion and MACOSX_DEPLOYMENT_TARGET are pinned to it too.
MIN_MACOS = "14.0"


class SelfCheckError(QwenDeskError):
    """MLX cannot run models on this machine; the message says what failed and what to do."""


@dataclass(frozen=True)
class SelfCheckReport:
    mlx_version: str
    device: str  # "gpu" or "cpu": where the check (and the models) ran
    metal: bool  # whether MLX reports a usable Metal backend
    details: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"mlx": self.mlx_version, "device": self.device, "metal": self.metal, **self.details}


def _metal_available(mx) -> bool:
    metal = getattr(mx, "metal", None)
    return bool(metal is not None and metal.is_available())


def _probe(mx, device) -> float:
    """One tiny computation, evaluated on ``device``: (1 + 2 + 3) * 2 = 12."""
    with mx.stream(device):
        value = (mx.array([1.0, 2.0, 3.0]) * 2).sum()
        mx.eval(value)
    return float(value.item())


def _macos_version() -> str:
    return platform.mac_ver()[0] or "unknown"


def _gpu_failure_message(error: BaseException) -> str:
    detail = str(error).strip() or type(error).__name__
    if METALLIB_FAILURE in detail.lower():
        return (
            "Qwen Desk can\u2019t use the GPU: MLX could not load its Metal library (mlx.metallib). "
            f"This copy of the app is incomplete or was built for a newer macOS (this Mac runs "
            f"macOS {_macos_version()}; Qwen Desk needs {MIN_MACOS} or later). Download the app "
            f"again and replace this copy; if that doesn\u2019t help, please report it. (MLX said: {detail})"
        )
    return (
        f"Qwen Desk can\u2019t use the GPU: a test computation failed ({detail}). Restart the Mac "
        "and open Qwen Desk again; if it keeps failing, reinstall the app and please report it."
    )


def run_self_check(require_gpu: bool | None = None) -> SelfCheckReport:
    """Run one small MLX operation; raise ``SelfCheckError`` with advice if it can't run.

    ``require_gpu`` (default: on macOS) demands the Metal GPU; otherwise the operation runs on
    MLX's default device (the CPU on Linux)."""
    if require_gpu is None:
        require_gpu = sys.platform == "darwin"
    try:
        import mlx.core as mx
    except Exception as error:  # noqa: BLE001 - an unimportable MLX is exactly what this reports
        if METALLIB_FAILURE in str(error).lower():  # MLX may open its Metal library at import
            raise SelfCheckError(_gpu_failure_message(error)) from error
        raise SelfCheckError(
            f"Qwen Desk can\u2019t start MLX, the library that runs the models ({error}). "
            "Reinstall the app; on a Mac it needs Apple silicon."
        ) from error
    metal = _metal_available(mx)
    if require_gpu and not metal:
        raise SelfCheckError(
            "Qwen Desk can\u2019t use the GPU: MLX finds no Metal device. It needs a Mac with "
            f"Apple silicon (M1 or later) running macOS {MIN_MACOS} or later (this Mac runs "
            f"macOS {_macos_version()}, {platform.machine() or 'unknown'} processor)."
        )
    device = mx.gpu if require_gpu else mx.default_device()
    try:
        result = _probe(mx, device)
    except Exception as error:  # noqa: BLE001 - MLX raises RuntimeError; anything else is as fatal
        if require_gpu:
            raise SelfCheckError(_gpu_failure_message(error)) from error
        raise SelfCheckError(
            f"Qwen Desk can\u2019t run MLX on this machine: a test computation failed ({error})."
        ) from error
    if result != 12.0:
        raise SelfCheckError(
            f"Qwen Desk can\u2019t trust MLX here: a test computation gave {result} instead of 12. "
            "Reinstall the app and please report it."
        )
    details: dict[str, object] = {}
    if metal:
        try:
            info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
            details = {k: info[k] for k in ("architecture", "memory_size") if k in info}
        except Exception:  # noqa: BLE001 - informational only
            pass
    kind = "gpu" if require_gpu else getattr(getattr(device, "type", None), "name", str(device))
    return SelfCheckReport(mlx_version=mx.__version__, device=kind, metal=metal, details=details)
