"""easyhard's record from a Hugging Face Trainer: EasyhardTrainer (the README's Hugging Face
section).

bf16 autocast, gradient accumulation and an evaluation every epoch (its batches do not count),
on small generated data; `torchrun --nproc-per-node 2 examples/hf_loop.py` trains in two CPU
processes (gloo). Run: python3 examples/hf_loop.py (about 20 s; writes hf-out/scores.npz).
"""

import torch
import transformers
from torch import nn

import easyhard
from easyhard.integrations.huggingface import EasyhardTrainer


class Classifier(nn.Module):  # any model whose forward takes the batch's keys
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 4)
        )

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values.float() / 255)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def as_dicts(rows):  # (image, label, index) items -> the batch dict the model and easyhard read
    images, labels, indices = zip(*rows)
    return {
        "pixel_values": torch.stack(images),
        "labels": torch.tensor(labels),
        "index": torch.tensor(indices),  # kept by EasyhardTrainer, though forward does not take it
    }


if __name__ == "__main__":
    torch.manual_seed(0)
    train_set = easyhard.load_dataset("synthetic", num_samples=1001, num_classes=4, image_size=8)
    test_set = easyhard.load_dataset(
        "synthetic", split="test", num_samples=200, num_classes=4, image_size=8
    )
    args = transformers.TrainingArguments(
        output_dir="hf-out",
        per_device_train_batch_size=32,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        learning_rate=0.05,
        eval_strategy="epoch",
        save_strategy="no",
        bf16=True,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    trainer = EasyhardTrainer(
        model=Classifier(),
        args=args,
        train_dataset=easyhard.with_indices(train_set),
        eval_dataset=easyhard.with_indices(test_set),
        data_collator=as_dicts,
    )
    trainer.train()
    print(trainer.stats.scores().to_pandas().describe())
