#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, builds the extension when
# its sources changed since the last build (CUDA kernels when a GPU is visible or FORCE_CUDA=1
# asks for them), builds the CMake target and runs ctest, then runs pytest. Any failure fails the
# script. Each step prints how long it took.
#
#   bash tests/run.sh                 # the fast tier: everything but the tests marked slow
#   bash tests/run.sh --all           # every test, slow tier included (what CI runs)
#   bash tests/run.sh --setup-only    # install and build only (README's first command uses it)
#   bash tests/run.sh -k TestAccumulateStats   # other arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
mode=fast
case "${1:-}" in
  --setup-only) mode=setup; shift ;;
  --all) mode=all; shift ;;
esac
start=$SECONDS
step_start=$SECONDS
step() {
  echo "   ($((SECONDS - step_start)) s)"
  step_start=$SECONDS
  echo "== $1"
}

echo "== installing dependencies"
# torch first: the extension is built against it without build isolation.
"$PY" -m pip install -q "torch>=2.4,<=2.14.1" "setuptools>=64" wheel ninja pybind11
command -v cmake > /dev/null || "$PY" -m pip install -q "cmake<4"
"$PY" -c "import nvidia.dali" 2> /dev/null || "$PY" -m pip install -q "nvidia-dali-cuda130" \
  || echo "warning: DALI could not be installed"

# The real Fashion-MNIST reader test and the main job need Debian's dataset-fashion-mnist.
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get > /dev/null; then
  step "installing dataset-fashion-mnist"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } > /tmp/easyhard-apt.log 2>&1; then
    cat /tmp/easyhard-apt.log
    if [ "${CI:-}" = "true" ]; then exit 1; fi
    echo "warning: could not install dataset-fashion-mnist; its test will be skipped"
  fi
fi

step "building easyhard (pip install -e ., only when its sources or settings changed)"
# ninja keeps its objects in build/ext-*: a changed source recompiles only that file.
if ! "$PY" easyhard/_extension.py; then
  "$PY" -m pip install -q --no-build-isolation -e ".[test]"
fi

if [ "$mode" = setup ]; then
  step "set up in $((SECONDS - start)) s; run 'python3 -m easyhard --help'"
  exit 0
fi

# The integrations' libraries (tests/test_integrations.py; the main job does not need them, so
# the set-up above does not spend the half minute they take to install when missing)
if ! "$PY" -c "import lightning, transformers, accelerate, pandas" 2> /dev/null; then
  step "installing the integrations' libraries for their tests (lightning, transformers)"
  "$PY" -m pip install -q "lightning>=2.1" "transformers>=4.46" "accelerate>=0.26" pandas
fi

step "lint and format: ruff (pyproject.toml), clang-format (.clang-format)"
# the linters CI runs (pinned: a new release must not fail an unchanged tree)
"$PY" -m pip install -q "ruff==0.17.6" "clang-format==23.1.5"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
CLANG_FORMAT="$("$PY" -c 'import clang_format; print(clang_format.get_executable("clang-format"))')"
find csrc \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' \) -print0 \
  | xargs -0 "$CLANG_FORMAT" --dry-run --Werror

step "CMake build and ctest (incremental in build/cmake)"
# The CMake build compiles the CUDA kernels exactly when the pip build did.
with_cuda="$("$PY" -c 'import json; print(json.load(open("easyhard/_build_info.json"))["with_cuda"])')"
cmake_args=(-DCMAKE_PREFIX_PATH="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')")
if [ "$with_cuda" = True ]; then
  cmake_args+=(-DEASYHARD_CUDA=ON -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc")
else
  cmake_args+=(-DEASYHARD_CUDA=OFF)
fi
mkdir -p build
cmake -S . -B build/cmake "${cmake_args[@]}" > build/cmake-configure.log 2>&1 \
  || { cat build/cmake-configure.log; exit 1; }
cmake --build build/cmake -j "$(nproc)"
ctest --test-dir build/cmake --output-on-failure

if [ "$mode" = all ]; then
  step "pytest, every tier"
  # The two-node tests run in a pytest process of their own: run after the rest of the suite in
  # one process, the resume of the killed two-node job hung (2026-12-07, twice; each passes in a
  # fresh process: a leftover of an earlier test, not yet found). Exit 5: -k selected none there.
  "$PY" -m pytest -q --ignore=tests/test_multinode.py "$@"
  "$PY" -m pytest -q tests/test_multinode.py "$@" || [ $? -eq 5 ]
else
  step "pytest, fast tier (bash tests/run.sh --all adds the tests marked slow)"
  "$PY" -m pytest -q -m "not slow" "$@"
fi
step "done in $((SECONDS - start)) s"
