"""CNN architectures by name: torchvision's ImageNet models and small-input networks.

    model = build_model("resnet20", num_classes=10, in_channels=1, image_size=28)

Registered: torchvision's resnet18/34/50, vgg16_bn, densenet121, mobilenet_v2,
mobilenet_v3_small/large (randomly initialised; the first convolution adapted to the input
channels); and for 28-32 px images a CIFAR-style ResNet-18 (3x3 stem, no max-pool), a ResNet-20
(16-32-64 channels, He et al. 2016), an airbench-style fast network, and ``convnet``, a
five-convolution network of width 32 (about 1,000 images/s on a 2-core CPU at 28 x 28).
``register_model`` adds your own.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Builder = Callable[[int, int, int], nn.Module]  # (num_classes, in_channels, image_size) -> model
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make `builder(num_classes, in_channels, image_size)` available as `name`."""

    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return wrap


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 224
) -> nn.Module:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown architecture {name!r}; choose one of {', '.join(available_models())}"
        )
    model = _REGISTRY[name](num_classes, in_channels, image_size)
    if image_size < PROBE_BELOW:
        _check_input_size(model, name, in_channels, image_size)
    return model


PROBE_BELOW = 64  # every registered architecture takes images this large or larger


def _check_input_size(model: nn.Module, name: str, in_channels: int, size: int) -> None:
    """Refuse images too small for the architecture (its strides and pools would shrink them
    to nothing), naming the smallest power-of-two size it takes, before any training."""
    import torch

    def fits(side: int) -> bool:
        try:
            with torch.no_grad():
                model(torch.zeros(1, in_channels, side, side))
        except RuntimeError:
            return False
        return True

    was_training = model.training
    model.eval()  # one example: batch norm in training mode would refuse it
    try:
        if fits(size):
            return
        smallest = next((s for s in (8, 16, 32, 64, 128, 256) if s > size and fits(s)), None)
    finally:
        model.train(was_training)
    raise ValueError(
        f"architecture {name} cannot take {size} x {size} images: its strides and pools shrink "
        "them to nothing"
        + (f" (it takes {smallest} x {smallest} and larger)" if smallest else "")
        + "; give larger images (`image_size`, or `crop` for image folders) or another "
        "architecture"
    )


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@register_model("convnet")
def convnet(num_classes: int, in_channels: int, image_size: int, width: int = 32) -> nn.Module:
    w = width
    return nn.Sequential(
        conv_bn(in_channels, w),
        conv_bn(w, w),
        nn.MaxPool2d(2),
        conv_bn(w, 2 * w),
        conv_bn(2 * w, 2 * w),
        nn.MaxPool2d(2),
        conv_bn(2 * w, 4 * w),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * w, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet for small images: 3x3 stem, stages of BasicBlocks, global average pooling."""

    def __init__(
        self, widths: list[int], blocks: list[int], num_classes: int, in_channels: int
    ) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, widths[0])
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


@register_model("resnet20")
def resnet20(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return SmallResNet([16, 32, 64], [3, 3, 3], num_classes, in_channels)


@register_model("resnet8")
def resnet8(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The shallowest of He et al.'s CIFAR ResNets (6n+2 layers, n=1): one BasicBlock per stage;
    a residual network at a third of resnet20's cost, for quick scoring on a CPU."""
    return SmallResNet([16, 32, 64], [1, 1, 1], num_classes, in_channels)


@register_model("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return SmallResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, in_channels)


@register_model("airbench")
def airbench(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """The shape of airbench's CIFAR-10 network (Jordan, 2024): a 2x2 whitening-sized stem and
    three conv groups of two convolutions with max-pooling, GELU, and a scaled linear head."""
    widths = (64, 256, 256)

    def group(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(cout),
            nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.GELU(),
        )

    return nn.Sequential(
        nn.Conv2d(in_channels, 24, 2, padding=0, bias=True),
        nn.GELU(),
        group(24, widths[0]),
        group(widths[0], widths[1]),
        group(widths[1], widths[2]),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(widths[2], num_classes, bias=False),
    )


def _adapt_first_conv(model: nn.Module, in_channels: int) -> nn.Module:
    if in_channels == 3:
        return model
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                bias=module.bias is not None,
            )
            parent = model
            *path, last = name.split(".")
            for p in path:
                parent = getattr(parent, p)
            setattr(parent, last, new)
            return model
    raise ValueError("no 3-channel input convolution found to adapt")


def _torchvision(name: str) -> Builder:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        import torchvision.models as tvm

        model = getattr(tvm, name)(weights=None, num_classes=num_classes)
        return _adapt_first_conv(model, in_channels)

    build.__name__ = name
    return build


for _name in (
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16_bn",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
):
    register_model(_name)(_torchvision(_name))
