"""Build easyhard's C++/CUDA extension (easyhard._C) with torch.utils.cpp_extension and ninja.

    pip install --no-build-isolation -e .          # CUDA kernels when a GPU is visible
    FORCE_CUDA=1 pip install --no-build-isolation -e .      # CUDA kernels without a GPU too
    EASYHARD_CUDA=0 / CUDA_HOME=... / TORCH_CUDA_ARCH_LIST="8.0;9.0+PTX"  # as in torchvision

CUDA kernels are compiled when a GPU is visible and a CUDA toolkit is found, or when FORCE_CUDA=1
asks for them (torchvision's rule; CI forces them, so a CUDA compile error always shows); a machine
without a GPU builds CPU-only by default. setup.py prints what it decided. Objects are compiled
into build/ext-cpu or build/ext-cuda inside the checkout (not pip's fresh temporary folder), so
ninja recompiles only what changed; after a successful build the digest of the sources and
settings goes into easyhard/_build_info.json, which tests/run.sh compares to skip an unchanged
build. Build isolation must stay off: the extension must be compiled against the torch that will
import it.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import sys

from setuptools import find_packages, setup

try:
    import torch  # noqa: F401  (the build must see the torch it compiles against)
    from torch.utils import cpp_extension
except ImportError:  # pragma: no cover - a build environment without torch
    sys.exit(
        "easyhard: torch must be installed before building (pip install 'torch>=2.4'), and the "
        "build must see it: use `pip install --no-build-isolation ...`."
    )

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_extension_module():
    """easyhard/_extension.py by path: the build decisions shared with tests/run.sh, without
    importing the package (which needs the extension this builds)."""
    spec = importlib.util.spec_from_file_location(
        "_easyhard_extension", os.path.join(HERE, "easyhard", "_extension.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXT = _load_extension_module()
ENV = dict(os.environ)  # as the caller set it: the digest's input (extensions() sets the archs)
PLAN = EXT.build_plan(ENV)


def log(msg: str) -> None:
    print(f"easyhard setup: {msg}", file=sys.stderr, flush=True)


class BuildExt(cpp_extension.BuildExtension):
    """torch's BuildExtension with ninja, compiling into a build folder kept in the checkout, and
    recording what it built (with the digest of its inputs) once the build succeeded."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.build_temp = os.path.join(
            HERE, "build", "ext-cuda" if PLAN["with_cuda"] else "ext-cpu"
        )

    def run(self) -> None:
        super().run()
        info = {k: PLAN[k] for k in ("torch_version", "with_cuda", "cuda_version", "cuda_archs")}
        info["digest"] = EXT.build_digest(HERE, PLAN, ENV)
        # Read by `import easyhard` (without torch) to detect a torch upgrade since the build, and
        # by tests/run.sh to skip an unchanged build. Beside the built module too (a wheel build).
        folders = {os.path.join(HERE, "easyhard")}
        folders.add(os.path.dirname(os.path.abspath(self.get_ext_fullpath("easyhard._C"))))
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "_build_info.json"), "w", encoding="utf-8") as f:
                json.dump(info, f, indent=1)


def extensions():
    with_cuda = PLAN["with_cuda"]
    sources = ["csrc/easyhard.cpp", "csrc/python_module.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # cpp_extension picks the C++ standard torch needs. -fopenmp: at::parallel_for is inline
    # OpenMP in ATen's headers and runs serially without it.
    cxx = ["-O3", "-fvisibility=hidden", "-fopenmp"]
    macros = [("EASYHARD_TORCH_VERSION", json.dumps(PLAN["torch_version"]))]
    if with_cuda:
        archs = PLAN["cuda_archs"]
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        macros += [
            ("WITH_CUDA", None),
            ("EASYHARD_CUDA_VERSION", json.dumps(PLAN["cuda_version"])),
            ("EASYHARD_CUDA_ARCHS", json.dumps(archs)),
        ]
        log(f"building CPU + CUDA kernels ({PLAN['why']}; TORCH_CUDA_ARCH_LIST={archs})")
        ext_cls = cpp_extension.CUDAExtension
        extra = {"cxx": cxx, "nvcc": ["-O3", "-lineinfo"]}
    else:
        log(f"building CPU kernels only ({PLAN['why']})")
        ext_cls = cpp_extension.CppExtension
        extra = {"cxx": cxx}
    log(f"torch {PLAN['torch_version']}, python {PLAN['python']}")
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
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
)
