"""One training or evaluation sample, and the error raised for a sample that cannot be used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from visionthink.errors import InputError


class SampleError(InputError):
    """A sample that cannot be used. The message names the sample, the problem and the fix."""

    def __init__(self, sample_id: str, problem: str, fix: str):
        self.sample_id = sample_id
        super().__init__(problem, fix, where=f"sample {sample_id}")

    @classmethod
    def wrap(cls, sample_id: str, error: InputError) -> SampleError:
        return cls(sample_id, error.problem, error.fix)


@dataclass(frozen=True)
class Sample:
    sample_id: str
    image: Image.Image
    question: str
    # The reference answer; `answers` keeps every accepted variant when the data has several.
    answer: str
    answers: tuple[str, ...] = ()
    data_source: str = ""
    # Whether answering needs the high-resolution image, when the data labels it.
    use_tool: bool | None = None
    info: dict[str, Any] = field(default_factory=dict)
