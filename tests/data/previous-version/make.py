"""How the files in this folder were made: by easyhard at commit b7e0318 (the version before the
restructure of issue 15), on the CPU with one thread, so that tests/test_train.py can check that
this version still loads them and resumes the killed run exactly.

    git worktree add /tmp/old b7e0318     # then build or copy its extension into /tmp/old/easyhard
    PYTHONPATH=/tmp/old python3 tests/data/previous-version/make.py /tmp/fixture

cut/convnet-run0/: a run killed after epoch 1 of 2 (checkpoint.pt with the accumulators and the
int64 totals inside, history.bin); full/scores.npz: the same run finished, its statistics file;
full/merged.npz: that file merged.
"""

import os
import sys

import torch

from easyhard.scores import merge_score_files  # the names of that version
from easyhard.train import ScoreConfig, score_run

torch.set_num_threads(1)
cfg = ScoreConfig(
    dataset="synthetic",
    num_samples=60,
    num_classes=3,
    image_size=8,
    batch_size=32,
    archs=("convnet",),
    epochs=2,
    device="cpu",
)
out = sys.argv[1]
score_run(cfg, "convnet", 0, os.path.join(out, "cut"), quiet=True, stop_after_epoch=1)
score_run(cfg, "convnet", 0, os.path.join(out, "full"), quiet=True)
merge_score_files(
    [os.path.join(out, "full", "convnet-run0", "scores.npz")],
    os.path.join(out, "full", "merged.npz"),
)
