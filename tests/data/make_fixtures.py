"""Make the compatibility fixtures: small folders written by one version of easyhard, finished and
killed mid-run, that every later version must read, resume and report (tests/test_fixtures.py).

    git worktree add /tmp/old c8db64d && (cd /tmp/old && EASYHARD_CUDA=0 \\
        pip install --no-build-isolation --no-deps --target /tmp/oldsite .)
    PYTHONPATH=/tmp/oldsite python3 tests/data/make_fixtures.py tests/data/c8db64d.tar.gz

Run from a folder other than the checkout (so that `import easyhard` finds the old version on
PYTHONPATH), e.g. `cd /tmp && PYTHONPATH=... python3 /work/main/tests/data/make_fixtures.py
/work/main/tests/data/c8db64d.tar.gz`. Every command runs inside one scratch folder with
relative paths, on synthetic data (no dataset on disk), so the fixtures name no machine's paths
beyond what the version itself records. The folders:

- study/: `easyhard study` finished (runs/ and seeds/ are score folders, then overlap/,
  similarity/, report/);
- study-killed/: the same study killed (SIGKILL) while its second score job trains;
- score-killed/: `easyhard score` of two runs killed during the second run;
- experiments/: a removal and a compression experiment sharing their reference cell, finished;
- experiments-killed/: a removal experiment killed (SIGKILL) after its first cell, then
  continued and killed again while its second cell trains.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

DATA = [
    "--dataset", "synthetic", "--num-samples", "240", "--num-classes", "3",
    "--image-size", "8", "--device", "cpu", "--batch-size", "48",
]  # fmt: skip
RECIPE = ["--arch", "resnet8", "--epochs", "2"]
SCORES = "study/runs/resnet8-run0/scores.npz"
REMOVAL = ["experiment", "removal", SCORES, *DATA, *RECIPE, "--fractions", "0.5"]
REMOVAL += ["--orders", "hardest", "--seeds", "1"]
COMPRESSION = ["experiment", "compression", SCORES, *DATA, *RECIPE, "--keep", "0.5"]
COMPRESSION += ["--strategies", "stratified", "--seeds", "1"]


def easyhard(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "easyhard", *args, "--quiet"], check=True)


def killed(args: list[str], when: str) -> None:
    """Run `easyhard args...` and SIGKILL it once a file matching the pattern `when` exists."""
    p = subprocess.Popen([sys.executable, "-m", "easyhard", *args, "--quiet"])
    while not glob.glob(when):
        if p.poll() is not None:
            raise SystemExit(f"{args} ended ({p.returncode}) before {when} appeared")
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()


def main(out: str) -> None:
    out = os.path.abspath(out)
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        easyhard("study", *DATA, "--arch", "resnet8", "--seed-runs", "1", "--out", "study")
        killed(
            ["study", *DATA, "--arch", "resnet8", "--seed-runs", "1", "--epochs", "3"]
            + ["--out", "study-killed"],
            "study-killed/seeds/resnet8-run0/checkpoint.pt",
        )
        killed(
            ["score", *DATA, *RECIPE, "--runs", "2", "--epochs", "3", "--out", "score-killed"],
            "score-killed/resnet8-run1/checkpoint.pt",
        )
        easyhard(*REMOVAL, "--out", "experiments")
        easyhard(*COMPRESSION, "--out", "experiments")
        # killed while the second cell trains: one cell finished, one half-trained
        killed([*REMOVAL, "--out", "experiments-killed"], "experiments-killed/cells/*/result.json")
        killed(
            [*REMOVAL, "--out", "experiments-killed"], "experiments-killed/cells/*/checkpoint.pt"
        )
        with tarfile.open(out, "w:gz") as tar:
            for name in sorted(os.listdir(".")):
                tar.add(name)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main(sys.argv[1])
