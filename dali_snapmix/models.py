"""Models the trainer can build without downloading anything."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN", "build_model"]


class SmallCNN(nn.Module):
    """A small CAM-able CNN for CPU runs: conv stages, then global average pooling and
    one linear layer (the head SnapMix's class activation maps need)."""

    def __init__(self, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        w = width
        self.features = nn.Sequential(stage(3, w), stage(w, 2 * w), stage(2 * w, 4 * w), stage(4 * w, 8 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def build_model(name: str, *, num_classes: int) -> nn.Module:
    if name == "small_cnn":
        return SmallCNN(num_classes)
    import torchvision

    known = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121")
    if name in known:
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    raise ValueError(f"unknown model {name!r}; choose one of {('small_cnn',) + known}")
