"""Errors about user input carry the problem and the fix separately, so that a caller can
re-raise them with where the input came from (a sample id, a file)."""

from __future__ import annotations


class InputError(ValueError):
    def __init__(self, problem: str, fix: str, where: str | None = None):
        self.problem, self.fix, self.where = problem, fix, where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{problem}. {fix}")

    def __reduce__(self):
        # Pickled when raised in a DataLoader worker; the default would call __init__(message).
        return type(self), (self.problem, self.fix, self.where)


class TrialInterrupted(RuntimeError):
    """A run stopped from outside (scancel, preemption, a killed job): the sweeper re-queues its
    trial on the next run of the same command instead of counting it as a failure."""
