"""One training or evaluation sample, and the error raised for a sample that cannot be used."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from visionthink.errors import InputError


class SampleError(InputError):
    """A sample that cannot be used. The message names the sample (and where it is: a file's
    1-based row), the problem and the fix."""

    def __init__(self, sample_id: str, problem: str, fix: str, location: str | None = None):
        self.sample_id, self.location = sample_id, location
        super().__init__(problem, fix, where=f"sample {sample_id}" + (f" ({location})" if location else ""))

    def __reduce__(self):
        return type(self), (self.sample_id, self.problem, self.fix, self.location)

    @classmethod
    def wrap(cls, sample_id: str, error: InputError, location: str | None = None) -> SampleError:
        return cls(sample_id, error.problem, error.fix, location)

    @classmethod
    def unprocessable(cls, sample_id: str, error: Exception) -> SampleError:
        """A sample the processor or the prompt could not turn into model inputs."""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return cls(
            sample_id, f"it could not be processed ({type(error).__name__}: {first_line[:200]})", "Fix or drop it"
        )


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

    @property
    def kind(self) -> str:
        """The kind of question: the part of ``data_source`` after its last '/' (synthetic: colour,
        stripes, ...; "all" when the data names no source)."""
        return self.data_source.rsplit("/", 1)[-1] or "all"
