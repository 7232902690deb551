"""The shipped classifier: a very shallow CNN, and the one place that builds its input."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Transform:
    """Input transform of a model: ``(image - mean) / std`` on images in [0, 1]."""

    mean: float = 0.1307
    std: float = 0.3081

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class SmallCNN(nn.Module):
    """One 5x5 convolution with 4 channels, max pooling, a 16-unit hidden layer, 10 logits.

    Each ReLU and pooling use has its own module, so captum's DeepLift can hook them.
    """

    def __init__(self, channels: int = 4, hidden: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(channels * 12 * 12, hidden)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations of the first hidden layer after the convolutions, (B, hidden)."""
        x = self.pool1(self.relu1(self.conv1(x)))  # (B, C, 12, 12)
        return self.fc1(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu2(self.features(x)))  # (B, 10)


class Classifier(nn.Module):
    """A network together with its input transform; takes images in [0, 1], returns logits.

    Args:
        net: the network, fed with transformed images of shape (B, 1, 28, 28).
        transform: the input transform; nothing else in the package normalizes.
    """

    def __init__(self, net: nn.Module, transform: Transform) -> None:
        super().__init__()
        self.net = net
        self.transform = transform

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.transform(images))  # (B, classes)

    @property
    def num_classes(self) -> int:
        last = [m for m in self.net.modules() if isinstance(m, nn.Linear)][-1]
        return int(last.out_features)
