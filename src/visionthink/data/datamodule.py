"""The LightningDataModule over ``SampleDataset``s.

The train loader is a ``StatefulDataLoader``: Lightning stores its position in every
checkpoint, so a resumed run continues with the very next batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from visionthink.data.batching import BadSamplePolicy, CollateSamples
from visionthink.data.readers import ColumnMapping, SampleDataset
from visionthink.data.synthetic import SyntheticConfig, write_synthetic
from visionthink.episode.resolution import ResolutionPolicy


@dataclass
class DataSource:
    path: str
    columns: ColumnMapping = field(default_factory=ColumnMapping)
    limit: int | None = None


class VisionThinkDataModule(L.LightningDataModule):
    def __init__(
        self,
        train: DataSource,
        val: DataSource | None = None,
        batch_size: int = 2,
        val_batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        on_bad_sample: BadSamplePolicy = "skip",
        resolution: ResolutionPolicy | None = None,
        synthetic: SyntheticConfig | None = None,
    ):
        super().__init__()
        self.train_source, self.val_source = train, val
        self.batch_size, self.val_batch_size = batch_size, val_batch_size
        self.num_workers, self.seed = num_workers, seed
        self.collate = CollateSamples(on_bad_sample)
        self.resolution = resolution or ResolutionPolicy()
        # When set, the synthetic set is written on first use under the train path's parent.
        self.synthetic = synthetic
        self.train_set: SampleDataset | None = None
        self.val_set: SampleDataset | None = None

    def prepare_data(self) -> None:
        if self.synthetic is not None:
            write_synthetic(Path(self.train_source.path).parent, self.synthetic)

    def _dataset(self, source: DataSource) -> SampleDataset:
        return SampleDataset(source.path, source.columns, source.limit, validate=self.resolution.check)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset(self.train_source)
        if self.val_source is not None and self.val_set is None:
            self.val_set = self._dataset(self.val_source)

    def train_dataloader(self) -> StatefulDataLoader:
        return StatefulDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> StatefulDataLoader | list:
        if self.val_set is None:
            return []
        return StatefulDataLoader(
            self.val_set,
            batch_size=self.val_batch_size,
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.num_workers,
        )
