"""Global batches that are the same for any number of ranks, with a resumable position.

``batch_size`` is the number of prompts per training step across all ranks (veRL's
train_batch_size); rank r of w takes items r, r + w, ... of each global batch. So a step
trains on the same prompts on 1 GPU or on 8, and every GRPO group lives on one rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        if batch_size % world_size:
            raise ValueError(f"data.batch_size={batch_size} must be a multiple of the number of ranks ({world_size})")
        if dataset_size < batch_size:
            raise ValueError(f"the training set has {dataset_size} samples, fewer than data.batch_size={batch_size}")
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return self.dataset_size // self.batch_size

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.dataset_size))
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.dataset_size, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        # The epoch ends when its last batch is taken, not when the iterator is exhausted: a
        # training loop takes exactly len(self) batches and never asks for one more.
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        order = self._order()
        while self.position < len(self):
            start = self.position * self.batch_size
            self.position += 1
            yield order[start : start + self.batch_size][self.rank :: self.world_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
