"""Run an example script with its training micro-batches captured, for the tests' independent
count: a forward hook keeps the logits of every training-mode forward of the module class named
by CAPTURE_CLASS, and a wrapper on DataLoader iteration keeps the labels and dataset indices of
every batch of an easyhard.with_indices dataset, with its epoch, step and dataset fingerprint
(evaluation data is told apart by it). Each process writes CAPTURE_DIR/rank<R>-<pid>.pt at exit
(or when terminated). Multi-process launchers that start this file again (Lightning's DDP)
capture in every process.

    python3 tests/capture_run.py examples/lightning_loop.py
"""

import atexit
import os
import signal
import sys

import torch

from easyhard.indexed import IndexedDataset

CLASS, OUT = os.environ["CAPTURE_CLASS"], os.environ["CAPTURE_DIR"]
captured = {"logits": [], "batches": [], "rank": 0}
epochs: dict[str, int] = {}  # per dataset fingerprint


def hook(module, args, output):
    # the model's own output: a tensor, or (Hugging Face) a dict holding the logits; Lightning
    # also calls the LightningModule for training_step under DDP, whose dict is not a forward
    if module.training and type(module).__name__ == CLASS:
        if isinstance(output, dict) and os.environ.get("CAPTURE_DICTS"):
            output = output["logits"]
        if isinstance(output, torch.Tensor):
            captured["logits"].append(output.detach().float().clone())


def batches(self):
    if not isinstance(self.dataset, IndexedDataset):  # evaluation data, or another loader
        yield from plain_iter(self)
        return
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        captured["rank"] = torch.distributed.get_rank()
    data = self.dataset.fingerprint
    epochs[data] = epoch = epochs.get(data, -1) + 1
    for step, batch in enumerate(plain_iter(self)):
        if isinstance(batch, dict):
            labels, indices = batch["labels"], batch["index"]
        else:
            labels, indices = batch[-2], batch[-1]
        captured["batches"].append((epoch, step, labels.clone(), indices.clone(), data))
        yield batch


def dump():
    if not captured.get("dumped"):
        captured["dumped"] = True
        torch.save(captured, os.path.join(OUT, f"rank{captured['rank']}-{os.getpid()}.pt"))


def terminated(signum, frame):  # Lightning ends its DDP children with SIGTERM once fit is done
    dump()
    os._exit(0)


torch.nn.modules.module.register_module_forward_hook(hook)
plain_iter = torch.utils.data.DataLoader.__iter__
torch.utils.data.DataLoader.__iter__ = batches
atexit.register(dump)
signal.signal(signal.SIGTERM, terminated)
# exec, not runpy.run_path: run_path sets sys.argv[0] to the example, and a launcher that starts
# this file again (Lightning's DDP children) would then start the example without the capture
with open(sys.argv[1]) as f:
    code = compile(f.read(), sys.argv[1], "exec")
exec(code, {"__name__": "__main__", "__file__": sys.argv[1]})
