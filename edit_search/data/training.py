"""Deterministic training of a deliberately underfit SmallCNN.

The shipped model must be weak (about 70-75 % held-out accuracy) so that it gets real digits
wrong. Accuracy of such a briefly trained model swings with the step count, so the recipe is
fixed here and recorded beside the checkpoint. The same recipe gives the same weights bit for
bit, because training runs with deterministic algorithms on exactly one thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from edit_search.data.model import Classifier, SmallCNN, Transform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRecipe:
    """Everything that decides the trained weights, given the training images.

    Attributes:
        seed: seeds the weight initialization and the batch order.
        steps: number of SGD steps; few on purpose, so the model stays underfit.
        batch_size: images per step; batches walk through seeded per-epoch permutations.
        lr: learning rate of plain SGD (no momentum, no weight decay).
        threads: torch intra-op threads while training; the weights depend on it.
    """

    seed: int = 0
    steps: int = 120
    batch_size: int = 32
    lr: float = 0.05
    threads: int = 1

    def to_dict(self) -> dict[str, int | float | str]:
        return {**asdict(self), "optimizer": "SGD", "loss": "cross_entropy"}


@contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Run a block with deterministic algorithms on a fixed thread count, then restore both."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_deterministic, warn_only=old_warn_only)
        torch.set_num_threads(old_threads)


def _batch_order(n: int, recipe: TrainingRecipe, generator: torch.Generator) -> torch.Tensor:
    """Indices of all training batches, (steps, batch_size): one fresh permutation per epoch."""
    needed = recipe.steps * recipe.batch_size
    epochs = -(-needed // n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return order[:needed].view(recipe.steps, recipe.batch_size)


def train_smallcnn(
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe | None = None,
    transform: Transform | None = None,
) -> SmallCNN:
    """Train a SmallCNN from scratch with plain SGD, reproducibly.

    Global RNG state, the thread count and the deterministic-algorithms flag are the same after
    the call as before it.

    Args:
        images: uint8 tensor (N, 28, 28), values 0-255.
        labels: int64 tensor (N,), values 0-9.
        recipe: the training recipe; the default is the shipped model's.
        transform: the input transform; the default is ``Transform()``.

    Returns:
        The trained network in eval mode (without the transform).

    Raises:
        ValueError: if the images or labels have the wrong shape or dtype.
    """
    recipe = recipe or TrainingRecipe()
    transform = transform or Transform()
    if images.dtype != torch.uint8 or images.dim() != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"Expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{tuple(images.shape)}."
        )
    if labels.shape != images.shape[:1]:
        raise ValueError(f"Expected {images.shape[0]} labels, got shape {tuple(labels.shape)}.")

    with deterministic_torch(recipe.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        net = SmallCNN()
        model = Classifier(net, transform)
        generator = torch.Generator().manual_seed(recipe.seed)
        batches = _batch_order(images.shape[0], recipe, generator)  # (steps, B)
        inputs = (images.float() / 255).unsqueeze(1)  # (N, 1, 28, 28) in [0, 1]
        optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr)
        loss_fn = nn.CrossEntropyLoss()

        model.train()
        for step, batch in enumerate(batches):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            if step % 20 == 0 or step == recipe.steps - 1:
                logger.debug("step %d: loss %.4f", step, loss.item())

    net.eval()
    return net


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted classes of uint8 images (N, 28, 28) under a Classifier, int64 (N,)."""
    inputs = (images.float() / 255).unsqueeze(1)  # (N, 1, 28, 28)
    chunks = [
        model(inputs[i : i + batch_size]).argmax(1) for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(chunks)
