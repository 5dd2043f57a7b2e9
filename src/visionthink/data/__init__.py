"""Data: samples from the released VisionThink datasets, generic local data, and a synthetic set."""

from visionthink.data.images import ImageLoadError, load_image, to_rgb
from visionthink.data.readers import ColumnMapping, DataFormatError, SampleDataset, open_table
from visionthink.data.sample import Sample, SampleError
from visionthink.data.synthetic import SyntheticConfig, write_synthetic

__all__ = [
    "ColumnMapping",
    "DataFormatError",
    "ImageLoadError",
    "Sample",
    "SampleDataset",
    "SampleError",
    "SyntheticConfig",
    "load_image",
    "open_table",
    "to_rgb",
    "write_synthetic",
]
