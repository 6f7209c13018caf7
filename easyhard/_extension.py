"""Locating and loading easyhard's compiled extension (easyhard._C).

`check_installed()` is cheap and torch-free (it runs on `import easyhard`): it finds the compiled
module and compares the torch it was built against (recorded by setup.py in _build_info.json) with
the torch installed now. It looks for the compiled module in the package's own folder only.
easyhard.ops imports the extension (registering the ops under torch.ops.easyhard) and checks it
with `same_release`; this module imports nothing of easyhard's, so setup.py can load it by path.
Both raise ImportError with the command that rebuilds the extension.

It also holds the build decisions that setup.py and the test command share (loaded by file path,
before the package is importable): whether to compile the CUDA kernels (`want_cuda`, torchvision's
rule) and the digest of everything a build depends on (`build_digest`). setup.py records the digest
in _build_info.json after a successful build; `python3 easyhard/_extension.py` (what
tests/run.sh calls) exits 0 when the installed build is that of the sources now, so an unchanged
checkout is never rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata
import json
import os
import sys
from typing import Any, Mapping

REBUILD = (
    "Rebuild it from the source checkout with:\n"
    "    pip install --no-build-isolation --no-deps -e .\n"
    "(FORCE_CUDA=1 to build the CUDA kernels on a machine without a GPU, EASYHARD_CUDA=0 for a "
    "CPU-only build)."
)
REBUILD_CUDA = (
    "this easyhard extension was built without its CUDA kernels (a machine without a visible "
    "GPU builds CPU-only); rebuild it with them from the source checkout: FORCE_CUDA=1 pip "
    "install --no-build-isolation --no-deps -e ."
)
_HERE = os.path.dirname(os.path.abspath(__file__))
_BUILD_INFO = os.path.join(_HERE, "_build_info.json")
# Environment variables that change what a build produces (compilers, flags, the CUDA choice).
BUILD_ENV = (
    "EASYHARD_CUDA",
    "FORCE_CUDA",
    "TORCH_CUDA_ARCH_LIST",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "LDFLAGS",
)
DEFAULT_ARCHS = "8.0;9.0+PTX"  # Ampere (A100, and sm_86/89 run sm_80 code), Hopper; PTX for newer


def want_cuda(
    env: Mapping[str, str], torch_cuda: str | None, cuda_home: str | None, gpu_visible: bool
) -> tuple[bool, str]:
    """Whether a build compiles the CUDA kernels, and why (torchvision's rule): when a GPU is
    visible and a CUDA toolkit is found, or when FORCE_CUDA=1 asks for them; never with
    EASYHARD_CUDA=0 or a torch without CUDA. A machine without a GPU builds CPU-only by default:
    kernels it cannot run would cost minutes of nvcc."""
    if env.get("EASYHARD_CUDA", "") == "0":
        return False, "EASYHARD_CUDA=0"
    if torch_cuda is None:
        return False, "torch is not a CUDA build"
    if env.get("FORCE_CUDA", "") == "1":
        if cuda_home is None:
            return False, "FORCE_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)"
        return True, f"FORCE_CUDA=1, CUDA toolkit at {cuda_home}"
    if not gpu_visible:
        return False, "no GPU visible; FORCE_CUDA=1 builds the CUDA kernels anyway"
    if cuda_home is None:
        return False, "a GPU is visible but no CUDA toolkit was found (set CUDA_HOME)"
    return True, f"GPU visible, CUDA toolkit at {cuda_home}"


def source_files(root: str) -> list[str]:
    """The files a pip build of the extension reads, relative to the checkout `root`: every file
    under csrc/ and the two build descriptions."""
    files = ["setup.py", "pyproject.toml"]
    for folder, dirs, names in os.walk(os.path.join(root, "csrc")):
        dirs.sort()
        files += sorted(os.path.relpath(os.path.join(folder, n), root) for n in names)
    return files


def build_digest(root: str, plan: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """sha256 over the sources (names and bytes), the build plan (torch and Python versions, the
    CUDA choice and archs) and the build-relevant environment: equal digests, equal builds."""
    h = hashlib.sha256()
    for rel in source_files(root):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    h.update(json.dumps(dict(plan), sort_keys=True).encode())
    h.update(json.dumps({k: env.get(k) for k in BUILD_ENV}, sort_keys=True).encode())
    return h.hexdigest()


def build_info() -> dict[str, Any]:
    """What setup.py recorded about the build: torch version, CUDA version and archs, backends."""
    try:
        with open(_BUILD_INFO, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def same_release(a: str, b: str, *, local: bool = True) -> bool:
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
    if built and not same_release(built, installed, local=False):
        raise ImportError(
            f"easyhard's extension was built against torch {built}, but torch {installed} is "
            "installed. " + REBUILD
        )


def build_plan(env: Mapping[str, str]) -> dict[str, Any]:
    """What a build here would produce now: the CUDA choice and why, archs, torch and Python
    versions. Imports torch (setup.py has it already; the up-to-date check needs it)."""
    import torch
    from torch.utils import cpp_extension

    gpu = torch.version.cuda is not None and torch.cuda.is_available()
    with_cuda, why = want_cuda(env, torch.version.cuda, cpp_extension.CUDA_HOME, gpu)
    return {
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
        "with_cuda": with_cuda,
        "why": why,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "cuda_archs": (env.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS) if with_cuda else None,
    }


def _installed_from(root: str) -> str | None:
    """Why the installed easyhard distribution is not the editable install of `root` (with its
    requirements, test extras included, present), or None when it is."""
    try:
        dist = importlib.metadata.distribution("easyhard")
    except importlib.metadata.PackageNotFoundError:
        return "easyhard is not installed"
    url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not url.get("dir_info", {}).get("editable"):
        return "easyhard is installed, but not as an editable install of this checkout"
    if os.path.realpath(url.get("url", "").removeprefix("file://")) != os.path.realpath(root):
        return f"easyhard is installed from {url.get('url')}, not from this checkout"
    for req in dist.requires or []:
        spec, _, marker = req.partition(";")
        if marker.strip() and marker.replace(" ", "") != 'extra=="test"':
            continue
        name = spec.strip().split()[0]
        for sep in "<>=!~[(":
            name = name.split(sep)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return f"{name}, a requirement of easyhard, is not installed"
    return None


def stale_reason(root: str, env: Mapping[str, str]) -> str | None:
    """Why `root`'s extension must be (re)built now, or None when the installed build is that of
    the current sources, plan and environment."""
    why = _installed_from(root)
    if why:
        return why
    if not any(
        os.path.exists(os.path.join(root, "easyhard", "_C" + s))
        for s in importlib.machinery.EXTENSION_SUFFIXES
    ):
        return "the compiled extension easyhard._C is missing"
    try:
        with open(os.path.join(root, "easyhard", "_build_info.json"), encoding="utf-8") as f:
            recorded = json.load(f).get("digest")
    except (OSError, ValueError):
        recorded = None
    plan = build_plan(env)
    if recorded != build_digest(root, plan, env):
        return "the sources, torch or the build settings changed since the last build"
    return None


if __name__ == "__main__":
    # tests/run.sh: exit 0 when the installed build is current, else print why and exit 1.
    reason = stale_reason(os.path.dirname(_HERE), os.environ)
    what = build_plan(os.environ)
    kernels = "CPU + CUDA kernels" if what["with_cuda"] else "CPU kernels only"
    state = f"{reason}: building" if reason else "up to date, not rebuilt"
    print(f"extension: {state} ({kernels}: {what['why']})")
    sys.exit(1 if reason else 0)
