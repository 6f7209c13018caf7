"""Build easyhard's C++/CUDA extension (easyhard._C) with torch.utils.cpp_extension and ninja.

    pip install --no-build-isolation -e .          # builds CUDA kernels if a toolkit is found
    EASYHARD_CUDA=0 pip install --no-build-isolation -e .   # CPU-only
    FORCE_CUDA=1 / CUDA_HOME=... / TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX"  # as in torchvision

CUDA kernels are compiled whenever a CUDA toolkit is found (CUDA_HOME, nvcc on PATH, or
FORCE_CUDA=1) and torch is a CUDA build, even on a machine with no GPU. setup.py prints what it
decided. Build isolation must stay off: the extension must be compiled against the torch that
will import it.
"""

from __future__ import annotations

import glob
import json
import os
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - a build environment without torch
    sys.exit(
        "easyhard: torch must be installed before building (pip install 'torch>=2.4'), and the "
        "build must see it: use `pip install --no-build-isolation ...`."
    )

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"  # Ampere (A100, and sm_86/89 run sm_80 code), Hopper; PTX for newer


def log(msg: str) -> None:
    print(f"easyhard setup: {msg}", file=sys.stderr, flush=True)


def want_cuda() -> tuple[bool, str]:
    if os.environ.get("EASYHARD_CUDA", "") == "0":
        return False, "EASYHARD_CUDA=0"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is not a CUDA build"
    if os.environ.get("FORCE_CUDA", "") == "1":
        return True, "FORCE_CUDA=1"
    if cpp_extension.CUDA_HOME is not None:
        return True, f"CUDA toolkit found at {cpp_extension.CUDA_HOME}"
    return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"


def extensions():
    with_cuda, why = want_cuda()
    sources = ["csrc/easyhard.cpp", "csrc/python_module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # cpp_extension picks the C++ standard torch needs. -fopenmp: at::parallel_for is inline
    # OpenMP in ATen's headers and runs serially without it; it also enables the `omp simd`
    # reductions of the CPU kernels.
    cxx = ["-O3", "-fvisibility=hidden", "-fopenmp"]
    macros = [("EASYHARD_TORCH_VERSION", json.dumps(torch.__version__))]
    archs = ""
    if with_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        macros += [
            ("WITH_CUDA", None),
            ("EASYHARD_CUDA_VERSION", json.dumps(torch.version.cuda)),
            ("EASYHARD_CUDA_ARCHS", json.dumps(archs)),
        ]
        log(f"building CPU + CUDA kernels ({why}; TORCH_CUDA_ARCH_LIST={archs})")
        ext_cls = cpp_extension.CUDAExtension
        extra = {"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]}
    else:
        log(f"building CPU kernels only ({why})")
        ext_cls = cpp_extension.CppExtension
        extra = {"cxx": cxx}
    log(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    # Read by `import easyhard` (without importing torch) to detect a torch upgrade since the build.
    info = {
        "torch_version": torch.__version__,
        "with_cuda": with_cuda,
        "cuda_version": torch.version.cuda if with_cuda else None,
        "cuda_archs": archs or None,
    }
    with open(os.path.join(HERE, "easyhard", "_build_info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    return [
        ext_cls(
            "easyhard._C",
            sources,
            define_macros=macros,
            extra_compile_args=extra,
            py_limited_api=False,
        )
    ]


setup(
    packages=find_packages(include=["easyhard", "easyhard.*"]),
    package_data={"easyhard": ["_build_info.json"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
