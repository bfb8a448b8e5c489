"""List the modules the app really imports at run time, as the frozen bundle will see it.

PyInstaller follows ``import`` statements, but transformers and huggingface_hub load most of
their submodules lazily through ``importlib`` (and our CLI imports its subcommands by name),
which static analysis cannot see. This probe imports every module of our two packages with the
packages we leave out of the bundle (torch & co.) made unimportable, exactly as in the frozen
app, and prints what ended up in ``sys.modules``: the spec passes that as hidden imports.

    python packaging/runtime_imports.py        # JSON list on stdout, problems on stderr
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys

# Not shipped: reference/test-only or optional extras of our dependencies. transformers and
# mlx-lm fall back cleanly when these are missing (they test for them before importing).
EXCLUDED_PACKAGES = (
    "torch", "torchvision", "torchaudio", "torchgen", "functorch", "triton",
    "tensorflow", "jax", "jaxlib", "flax", "keras",
    "sentencepiece", "accelerate", "datasets", "safetensors.torch", "mistral_common",
    "scipy", "sklearn", "pandas", "matplotlib", "sympy", "networkx", "PIL",
    "IPython", "pytest", "_pytest", "pytestqt", "tkinter", "tests",
    # huggingface_hub's CLI and webhook server extras.
    "pydantic", "pydantic_core", "typer", "rich", "click", "fastapi", "gradio",
)
OUR_PACKAGES = ("mlx_backend", "app")


def _block_excluded() -> None:
    # A None entry makes ``import x`` fail and ``importlib.util.find_spec(x)`` return None,
    # which is exactly what libraries probing for optional packages see in the bundle.
    for name in EXCLUDED_PACKAGES:
        sys.modules[name] = None  # type: ignore[assignment]


def probe() -> list[str]:
    _block_excluded()
    for package_name in OUR_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, prefix=package_name + "."):
            try:
                importlib.import_module(module.name)
            except Exception as error:  # a broken module must not hide the others' imports
                print(f"runtime_imports: cannot import {module.name}: {error!r}", file=sys.stderr)
    return sorted(
        name for name, module in sys.modules.items()
        # Only modules loaded from a file can be hidden imports: built-ins, frozen modules,
        # C-extension submodules (mlx.core.fast) and typing aliases have nothing to collect.
        # (shiboken's support modules live inside the extension: no file on disk either).
        if os.path.isfile(getattr(module, "__file__", None) or "")
        and not name.startswith(("__main__", "__mp_main__", "__editable__", "_distutils_hack"))
        and not name.startswith(OUR_PACKAGES)  # ours are collected as whole packages anyway
    )


if __name__ == "__main__":
    json.dump(probe(), sys.stdout)
