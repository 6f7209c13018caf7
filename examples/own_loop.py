"""easyhard's per-example record from a plain PyTorch training loop (the README's own-loop section).

The six lines marked `# easyhard` are all it adds to the script. Run: python3 examples/own_loop.py
(Fashion-MNIST from Debian's dataset-fashion-mnist; about a minute on a 2-core CPU).
"""

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import DataLoader

import easyhard

torch.manual_seed(0)
augment = T.Compose([T.RandomCrop(28, padding=2), T.ToTensor()])
train_set = easyhard.load_dataset("fashion-mnist", transform=augment)  # or a torchvision dataset
data = easyhard.with_indices(train_set)  # easyhard: every item gains its dataset index
loader = DataLoader(data, batch_size=256, shuffle=True, num_workers=2)
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    nn.Flatten(), nn.Linear(32, 10),
)  # fmt: skip
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
stats = easyhard.SampleStats.for_dataset(data)  # easyhard: the recorder (size, labels, fingerprint)

for epoch in range(2):
    model.train()
    for images, labels, indices in loader:  # easyhard: the index, unpacked
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        stats.update(logits, labels, indices)  # easyhard: the step's own logits, no extra pass
    stats.end_epoch()  # easyhard: 8 bytes per example into the per-epoch history
stats.save("scores.npz", metadata={"arch": "small-cnn", "seed": 0})  # easyhard

table = stats.scores().to_pandas()  # one row per example: label, easiness, forgetting, el2n, ...
print(table.sort_values("easiness")[["label", "easiness", "forgetting", "el2n"]].head())
selection = easyhard.select_subset(stats, "easiness", keep=0.7)  # the CLI's defaults
subset = selection.subset(train_set)  # a torch Subset: train on it next time
print(f"kept {len(subset)} of {len(train_set)} examples")
