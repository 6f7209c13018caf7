#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, builds the extension with its
# CUDA kernels when a CUDA toolkit is present (compile and link only: no GPU is needed), builds the
# CMake target and runs ctest, then runs pytest. Any failure fails the script.
#
#   bash tests/run.sh                 # extra arguments go to pytest, e.g. -k TestAccumulateStats
#   bash tests/run.sh --setup-only    # install and build only (README's first command uses it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi

echo "== installing dependencies"
# torch first: the extension is built against it without build isolation.
"$PY" -m pip install -q "torch>=2.4,<=2.14.1" "setuptools>=64" wheel ninja pybind11
command -v cmake > /dev/null || "$PY" -m pip install -q "cmake<4"
"$PY" -m pip install -q "nvidia-dali-cuda130" || echo "warning: DALI could not be installed"
# the linters CI runs (pinned: a new release must not fail an unchanged tree)
"$PY" -m pip install -q "ruff==0.17.6" "clang-format==23.1.5"

# The real Fashion-MNIST reader test needs Debian's dataset-fashion-mnist (skipped without it).
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get > /dev/null; then
  echo "== installing dataset-fashion-mnist"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } > /tmp/easyhard-apt.log 2>&1; then
    cat /tmp/easyhard-apt.log
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "warning: could not install dataset-fashion-mnist; its test will be skipped"
  fi
fi

echo "== building easyhard (pip install -e .)"
"$PY" -m pip install -q --no-build-isolation -e ".[test]"

if [ "${1:-}" = "--setup-only" ]; then
  echo "== set up; run 'python3 -m easyhard --help'"
  exit 0
fi

echo "== lint and format: ruff (pyproject.toml), clang-format (.clang-format)"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
CLANG_FORMAT="$("$PY" -c 'import clang_format; print(clang_format.get_executable("clang-format"))')"
find csrc \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) -print0 \
  | xargs -0 "$CLANG_FORMAT" --dry-run --Werror

echo "== CMake build and ctest"
cmake_args=(-DCMAKE_PREFIX_PATH="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')")
if [ -n "${CUDA_HOME:-}" ]; then
  cmake_args+=(-DEASYHARD_CUDA=ON -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
fi
mkdir -p build
cmake -S . -B build/cmake "${cmake_args[@]}" > build/cmake-configure.log 2>&1 \
  || { cat build/cmake-configure.log; exit 1; }
cmake --build build/cmake -j "$(nproc)"
ctest --test-dir build/cmake --output-on-failure

echo "== pytest"
"$PY" -m pytest -q "$@"
