"""Batches of samples, with bad samples skipped and counted instead of ending a run."""

from __future__ import annotations

from typing import Literal

from visionthink.data.sample import Sample, SampleError

BadSamplePolicy = Literal["skip", "raise"]


class SampleBatch:
    """A step's samples and the bad ones skipped from it. A plain class, not a dataclass: Lightning
    recurses into dataclasses to move and cast tensors (the sharded strategies' precision casts
    refuse frozen ones, as samples are), and a batch of images and strings has none to move."""

    def __init__(self, samples: list[Sample], skipped: list[SampleError] | None = None, raise_on_bad: bool = False):
        self.samples = samples
        self.skipped = skipped if skipped is not None else []
        # data.on_bad_sample=raise: the consumer stops at the first skipped sample. Raised there, in
        # the main process, not in a DataLoader worker, whose exceptions come back as a RuntimeError
        # wrapping a traceback.
        self.raise_on_bad = raise_on_bad

    def __len__(self) -> int:
        return len(self.samples)


class CollateSamples:
    """Collate ``Sample | SampleError`` items; ``on_bad_sample`` decides skip (the training module
    logs and counts the skipped ones, once) or raise (``check``, in the consumer)."""

    def __init__(self, on_bad_sample: BadSamplePolicy = "skip"):
        if on_bad_sample not in ("skip", "raise"):
            raise ValueError(f"data.on_bad_sample must be 'skip' or 'raise', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample

    def __call__(self, items: list[Sample | SampleError]) -> SampleBatch:
        batch = SampleBatch(samples=[], raise_on_bad=self.on_bad_sample == "raise")
        for item in items:
            (batch.skipped if isinstance(item, SampleError) else batch.samples).append(item)
        return batch

    @staticmethod
    def check(batch: SampleBatch) -> None:
        """Raise the batch's first bad sample when the policy is to stop."""
        if batch.raise_on_bad and batch.skipped:
            raise batch.skipped[0]
