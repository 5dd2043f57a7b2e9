"""The LightningDataModule over ``SampleDataset``s.

The train loader is a ``StatefulDataLoader`` over global batches (``GlobalBatchSampler``):
Lightning stores its position in every checkpoint, so a resumed run continues with the very next
batch, and ``batch_size`` counts prompts per step across all ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from torch.utils.data import Subset
from torchdata.stateful_dataloader import StatefulDataLoader

from visionthink.data.batching import BadSamplePolicy, CollateSamples
from visionthink.data.images import DEFAULT_MAX_PIXELS
from visionthink.data.readers import ColumnMapping, SampleDataset
from visionthink.data.sampler import GlobalBatchSampler
from visionthink.data.synthetic import SyntheticConfig, write_synthetic
from visionthink.episode.resolution import ResolutionPolicy


@dataclass
class DataSource:
    path: str
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    limit: int | None = None


def spare_cpus(at_most: int = 4) -> int:
    """Loader processes for ``num_workers: null``: the CPUs this process may use beyond its own
    (training needs one), at most ``at_most``."""
    return max(0, min(at_most, len(os.sched_getaffinity(0)) - 1))


class VisionThinkDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: DataSource,
        val: DataSource | None = None,
        batch_size: int = 8,
        val_batch_size: int = 8,
        num_workers: int | None = 0,
        seed: int = 0,
        on_bad_sample: BadSamplePolicy = "skip",
        resolution: ResolutionPolicy | None = None,
        synthetic: SyntheticConfig | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        super().__init__()
        self.train_source, self.val_source = train, val
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers = spare_cpus() if num_workers is None else num_workers
        self.seed = seed
        self.collate = CollateSamples(on_bad_sample)
        self.max_image_pixels = max_image_pixels
        self.resolution = resolution or ResolutionPolicy()
        # When set, the synthetic set is written on first use under the train path's parent.
        self.synthetic = synthetic
        self.train_set: SampleDataset | None = None
        self.val_set: SampleDataset | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            write_synthetic(Path(self.train_source.path).parent, self.synthetic)

    def _dataset(self, source: DataSource) -> SampleDataset:
        return SampleDataset(
            source.path, source.columns, source.limit, self.resolution.check, max_image_pixels=self.max_image_pixels
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.train_source)
        if self.val_source is not None and self.val_set is None:
            self.val_set = self._dataset(self.val_source)

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> StatefulDataLoader:
        rank, world_size = self._ranks()
        sampler = GlobalBatchSampler(len(self.train_set), self.batch_size, self.seed, rank, world_size)
        return StatefulDataLoader(
            self.train_set, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers
        )

    def val_dataloader(self) -> StatefulDataLoader | list:
        if self.val_set is None:
            return []
        rank, world_size = self._ranks()
        # Each rank validates its share; the module gathers the metrics.
        shard = Subset(self.val_set, range(rank, len(self.val_set), world_size))
        return StatefulDataLoader(
            shard, batch_size=self.val_batch_size, shuffle=False, collate_fn=self.collate, num_workers=self.num_workers
        )
