#!/usr/bin/env bash
# The first ten minutes, measured: a fresh clone of this checkout's HEAD in a fresh virtual
# environment runs the README's two commands as written, then the test command once more (which
# must rebuild nothing). Writes benchmarks/results/bench_setup.json and prints the times.
#
#   bash benchmarks/bench_setup.sh [WORKDIR]        # default WORKDIR: a new folder under /tmp
#   REMOVE_DATASET=1 bash benchmarks/bench_setup.sh # apt-get remove dataset-fashion-mnist first,
#                                                   # so the set-up's apt step is timed too
#
# Budgets (README): the first command at most 10 minutes, the test command's fast tier at most 8.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d /tmp/easyhard-setup-XXXXXX)}"
mkdir -p "$work"
if [ "${REMOVE_DATASET:-}" = 1 ]; then
  apt-get remove -y -qq dataset-fashion-mnist > /dev/null 2>&1 || true
fi
git clone -q "$repo" "$work/clone"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
cd "$work/clone"
commit="$(git rev-parse --short HEAD)"
timed() {  # timed NAME LOG COMMAND...: seconds of the command into $NAME_s; fails on failure
  local name="$1" log="$2" t0=$SECONDS
  shift 2
  "$@" > "$work/$log" 2>&1 || { echo "$name failed: see $work/$log" >&2; exit 1; }
  eval "${name}_s=$((SECONDS - t0))"
}
timed setup setup.log bash tests/run.sh --setup-only
timed study study.log python3 -m easyhard study --out runs/fashion-mnist
timed tests tests.log bash tests/run.sh
timed again again.log bash tests/run.sh
grep -q "extension: up to date, not rebuilt" "$work/again.log" \
  || { echo "the second test run rebuilt the extension: see $work/again.log" >&2; exit 1; }
first=$((setup_s + study_s))
mkdir -p "$repo/benchmarks/results"
cat > "$repo/benchmarks/results/bench_setup.json" << EOF
{"date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "commit": "$commit", "cpu_count": $(nproc),
 "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')",
 "removed_dataset_first": $([ "${REMOVE_DATASET:-}" = 1 ] && echo true || echo false),
 "setup_s": $setup_s, "study_s": $study_s, "first_command_s": $first,
 "tests_s": $tests_s, "tests_again_s": $again_s,
 "first_command_within_10_min": $([ $first -le 600 ] && echo true || echo false),
 "tests_within_8_min": $([ "$tests_s" -le 480 ] && echo true || echo false)}
EOF
echo "set-up ${setup_s} s, study ${study_s} s: first command ${first} s (budget 600);" \
  "tests ${tests_s} s (budget 480), again ${again_s} s; in $work"
