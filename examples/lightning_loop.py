"""easyhard's record from a Lightning fit: EasyhardCallback (the README's Lightning section).

Two CPU processes (DDP over gloo), bf16 autocast and gradient accumulation, on small generated
data of an odd size (so the DistributedSampler pads a shard by repeating an example: the repeat
does not count). Run: python3 examples/lightning_loop.py (about 30 s; writes scores.npz).
"""

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

import easyhard
from easyhard.integrations.lightning import EasyhardCallback


class Classifier(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 4)
        )

    def forward(self, images):
        return self.net(images.float() / 255)

    def training_step(self, batch, batch_idx):
        images, labels, indices = batch  # easyhard.with_indices adds the index
        logits = self(images)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}  # the step's logits

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


if __name__ == "__main__":
    torch.manual_seed(0)
    train_set = easyhard.load_dataset("synthetic", num_samples=1001, num_classes=4, image_size=8)
    loader = DataLoader(easyhard.with_indices(train_set), batch_size=32, shuffle=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        precision="bf16-mixed",
        accumulate_grad_batches=2,
        max_epochs=3,
        callbacks=[EasyhardCallback("scores.npz", metadata={"arch": "mlp"})],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(Classifier(), loader)
