"""Errors about user input carry the problem and the fix separately, so that a caller can
re-raise them with where the input came from (a sample id, a file)."""

from __future__ import annotations


class InputError(ValueError):
    def __init__(self, problem: str, fix: str, where: str | None = None):
        self.problem, self.fix, self.where = problem, fix, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{problem}. {fix}")
