"""Reading local datasets into ``Sample``s.

Accepted layouts: a ``datasets.save_to_disk`` folder (the released VisionThink data), parquet
files or folders of them (also lmms-eval's layout), and json/jsonl with image paths relative to
the file. ``ColumnMapping`` says which column holds what.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from torch.utils.data import Dataset

from visionthink.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from visionthink.data.sample import Sample, SampleError
from visionthink.errors import InputError

log = logging.getLogger(__name__)


class DataFormatError(InputError):
    """A dataset whose files or columns do not fit the configuration."""


@dataclass
class ColumnMapping:
    """Column names per field. A list means: the first of these that exists."""

    image: str | list[str] = "images"
    question: str | list[str] = "problem"
    answer: str | list[str] = field(default_factory=lambda: ["original_answer", "solution", "answer"])
    data_source: str | list[str] | None = "data_source"
    # Released data: a struct with tgt_width, tgt_height, use_tool.
    info: str | None = "info"
    # A top-level boolean column; when absent, info.use_tool is used.
    use_tool: str | None = None
    # When absent, samples are named "<file name>:<row>".
    sample_id: str | None = None
    # More columns to keep, as {info key: column}, e.g. a benchmark's question category.
    extra: dict[str, str] = field(default_factory=dict)


def open_table(path: str | Path) -> datasets.Dataset:
    path = Path(path).expanduser()
    if not path.exists():
        raise DataFormatError(
            f"data path {path} does not exist", "Run `make data` for the synthetic set, or fix the path"
        )
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_info.json").exists()):
        table = datasets.load_from_disk(str(path))
        if isinstance(table, datasets.DatasetDict):
            raise DataFormatError(f"{path} holds splits {list(table)}", "Point the config at one split folder")
        return table
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise DataFormatError(f"{path} has no parquet files and is not a save_to_disk folder", "Fix the path")
    suffix = files[0].suffix
    builder = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}.get(suffix)
    if builder is None:
        raise DataFormatError(
            f"{files[0]}: unsupported file type {suffix!r}", "Use parquet, json/jsonl or save_to_disk"
        )
    return datasets.load_dataset(builder, data_files=[str(file) for file in files], split="train")


def _undecoded_images(table: datasets.Dataset, column: str) -> datasets.Dataset:
    """Keep image bytes undecoded so a corrupt image fails in our loader, per sample."""
    feature = table.features[column]
    if isinstance(feature, datasets.Image):
        return table.cast_column(column, datasets.Image(decode=False))
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.Image):
        return table.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return table


def _pick(
    columns: Sequence[str], candidates: str | list[str] | None, field_name: str, source: str, required: bool
) -> str | None:
    if candidates is None:
        return None
    options = [candidates] if isinstance(candidates, str) else list(candidates)
    for name in options:
        if name in columns:
            return name
    if not required:
        return None
    raise DataFormatError(
        f"{source}: no column for {field_name!r}; expected one of {options}, found {list(columns)}",
        f"Set the column mapping (data.train.columns.{field_name}=<column>, or benchmark.<name>.columns.{field_name})",
    )


class SampleDataset(Dataset):
    """Samples of one local dataset. ``__getitem__`` returns the ``Sample`` or, for a bad row,
    the ``SampleError`` (so that the collate function decides whether to skip or stop)."""

    def __init__(
        self,
        path: str | Path,
        columns: ColumnMapping | None = None,
        limit: int | None = None,
        validate: Callable[[Any], None] | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.path = Path(path).expanduser()
        self.max_image_pixels = max_image_pixels
        self.source = self.path.name
        self.base_dir = self.path if self.path.is_dir() else self.path.parent
        self.validate = validate
        columns = columns or ColumnMapping()
        table = open_table(self.path)
        names = table.column_names
        where = str(self.path)
        self.columns = {
            "image": _pick(names, columns.image, "image", where, required=True),
            "question": _pick(names, columns.question, "question", where, required=True),
            "answer": _pick(names, columns.answer, "answer", where, required=True),
            "data_source": _pick(names, columns.data_source, "data_source", where, required=False),
            "info": _pick(names, columns.info, "info", where, required=False),
            "use_tool": _pick(names, columns.use_tool, "use_tool", where, required=columns.use_tool is not None),
            "sample_id": _pick(names, columns.sample_id, "sample_id", where, required=columns.sample_id is not None),
        }
        self.extra = {
            key: _pick(names, column, f"extra.{key}", where, required=True) for key, column in columns.extra.items()
        }
        table = _undecoded_images(table, self.columns["image"])
        if limit is not None:
            table = table.select(range(min(limit, len(table))))
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def sample_id(self, index: int, row: dict[str, Any] | None = None) -> str:
        column = self.columns["sample_id"]
        if column and row is not None and row.get(column) is not None:
            return str(row[column])
        return f"{self.source}:{index}"

    def load(self, index: int) -> Sample:
        row = self.table[index]
        sample_id = self.sample_id(index, row)
        location = f"row {index + 1} of {self.path}"
        try:
            image = load_image(row[self.columns["image"]], self.base_dir, self.max_image_pixels)
        except ImageLoadError as error:
            raise SampleError.wrap(sample_id, error, location) from None
        question = row[self.columns["question"]]
        if not isinstance(question, str) or not question.replace("<image>", "").strip():
            raise SampleError(
                sample_id,
                "the question is empty",
                f"Fill column {self.columns['question']!r} or drop the row",
                location,
            )
        answers = row[self.columns["answer"]]
        answers = [answers] if not isinstance(answers, (list, tuple)) else list(answers)
        answers = tuple(str(answer).strip() for answer in answers if answer is not None and str(answer).strip())
        if not answers:
            raise SampleError(
                sample_id, "the answer is empty", f"Fill column {self.columns['answer']!r} or drop the row", location
            )
        info = row.get(self.columns["info"]) if self.columns["info"] else None
        info = dict(info) if isinstance(info, dict) else {}
        info.update({key: row[column] for key, column in self.extra.items()})
        use_tool = row.get(self.columns["use_tool"]) if self.columns["use_tool"] else info.get("use_tool")
        data_source = row.get(self.columns["data_source"]) if self.columns["data_source"] else None
        sample = Sample(
            sample_id=sample_id,
            image=image,
            question=question,
            answer=answers[0],
            answers=answers,
            data_source=str(data_source or self.source),
            use_tool=None if use_tool is None else bool(use_tool),
            info=info,
        )
        if self.validate is not None:
            try:
                self.validate(sample.image)
            except InputError as error:
                raise SampleError.wrap(sample_id, error, location) from None
        return sample

    def __getitem__(self, index: int) -> Sample | SampleError:
        try:
            return self.load(index)
        except SampleError as error:
            return error
