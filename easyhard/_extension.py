"""Locating and loading easyhard's compiled extension (easyhard._C).

`check_installed()` is cheap and torch-free (it runs on `import easyhard`): it finds the compiled
module and compares the torch it was built against (recorded by setup.py in _build_info.json) with
the torch installed now. It looks for the compiled module in the package's own folder only.
`load()` imports torch and the extension, which registers the ops under torch.ops.easyhard.
Both raise ImportError with the command that rebuilds the extension.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import json
import os
from typing import Any

REBUILD = (
    "Rebuild it from the source checkout with:\n"
    "    CUDA_HOME=/usr/local/cuda pip install --no-build-isolation --no-deps -e .\n"
    "(EASYHARD_CUDA=0 for a CPU-only build)."
)
_BUILD_INFO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_build_info.json")


def build_info() -> dict[str, Any]:
    """What setup.py recorded about the build: torch version, CUDA version and archs, backends."""
    try:
        with open(_BUILD_INFO, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _same_release(a: str, b: str, *, local: bool = True) -> bool:
    """Whether two torch versions are the same release ("2.14.1+cu130"); with local=False the
    local tag is ignored (package metadata may omit it)."""
    if not local:
        a, b = a.split("+")[0], b.split("+")[0]
    return a.strip() == b.strip()


def check_installed() -> None:
    """Raise ImportError if the extension is missing or was built against another torch."""
    here = os.path.dirname(_BUILD_INFO)
    if not any(
        os.path.exists(os.path.join(here, "_C" + suffix))
        for suffix in importlib.machinery.EXTENSION_SUFFIXES
    ):
        raise ImportError("easyhard's compiled extension easyhard._C is missing. " + REBUILD)
    built = build_info().get("torch_version")
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("easyhard needs torch, which is not installed: pip install 'torch>=2.4'")
    if built and not _same_release(built, installed, local=False):
        raise ImportError(
            f"easyhard's extension was built against torch {built}, but torch {installed} is "
            "installed. " + REBUILD
        )


def load():
    """Import the extension (registering torch.ops.easyhard) and return its module."""
    import torch

    try:
        from easyhard import _C
    except (ImportError, OSError) as e:
        raise ImportError(f"easyhard's compiled extension failed to load ({e}). " + REBUILD) from e
    if not _same_release(_C.torch_version, torch.__version__):
        raise ImportError(
            f"easyhard's extension was built against torch {_C.torch_version}, but torch "
            f"{torch.__version__} is imported. " + REBUILD
        )
    return _C
