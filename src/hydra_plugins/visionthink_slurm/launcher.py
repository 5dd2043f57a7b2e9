"""hydra-submitit-launcher's SLURM launcher, made to report each job on its own.

Its ``launch`` waits on ``job.results()`` for every job of the array, and the first job that
ended without a result (cancelled, preempted, its node lost) raises there: the sweep process dies
and the trials that did finish go unrecorded. Here such a job becomes a FAILED ``JobReturn``
carrying :class:`TrialInterrupted`, and the launched job ids are kept for the sweeper.

Job states come from ``squeue`` (slurmctld), not submitit's ``sacct`` polling: a cluster without
accounting (no slurmdbd) has no sacct, and there submitit would print an error every few seconds
and never see that a job was cancelled. The module also registers the ``gpus_per_node`` resolver
of ``conf/hydra/launcher/slurm.yaml``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from typing import Any
from unittest import mock

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from omegaconf import OmegaConf

from visionthink.errors import TrialInterrupted

ACCELERATORS_WITH_GPUS = ("gpu", "cuda", "auto")


def gpus_per_node(accelerator: str, devices: Any) -> int | None:
    """GPUs a job asks SLURM for, from the trainer's accelerator and devices (None: no GPU request)."""
    if str(accelerator) not in ACCELERATORS_WITH_GPUS or not str(devices).isdigit():
        return None
    return int(devices)


OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node, replace=True)


# squeue states of a job that may still write its result
ACTIVE_STATES = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "PREEMPTED",
}  # fmt: skip
POLL_SECONDS = 5
# A finished job's result file may show up on a shared file system a little after the job ends
RESULT_GRACE_SECONDS = 15
# A job writes its result before its epilogue; slurmctld records the end a moment later
END_GRACE_SECONDS = 60


def scheduler_state(job_id: str) -> str | None:
    """The job's state as slurmctld reports it (None once it has forgotten the job, MinJobAge
    after it ended). Unlike sacct this needs no accounting database."""
    result = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={job_id}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    state = result.stdout.strip().split()
    return state[0] if result.returncode == 0 and state else None


class JobOutcome:
    """A submitted job whose ``results()`` reports a job that ended without a result (cancelled,
    killed, its node lost) as an interrupted trial, instead of raising or, where sacct cannot
    tell that the job ended, waiting forever."""

    def __init__(self, job: Any, overrides: Sequence[str]) -> None:
        self.job, self.overrides = job, list(overrides)

    def interrupted(self, reason: str) -> list[JobReturn]:
        error = TrialInterrupted(f"SLURM job {self.job.job_id} ended without a result: {reason}")
        return [JobReturn(overrides=self.overrides, status=JobStatus.FAILED, _return_value=error)]

    def wait_for_end(self) -> None:
        """Return once slurmctld no longer counts the job as active, so that the next batch of
        trials finds its resources free and the recorded job state is final (bounded: a slow
        epilogue does not hold the sweep)."""
        deadline = time.time() + END_GRACE_SECONDS
        while scheduler_state(self.job.job_id) in ACTIVE_STATES and time.time() < deadline:
            time.sleep(0.5)

    def results(self) -> list[JobReturn]:
        import submitit

        # Not job.done(): it asks sacct
        while not self.job.paths.result_pickle.exists():
            state = scheduler_state(self.job.job_id)
            if state not in ACTIVE_STATES:
                deadline = time.time() + RESULT_GRACE_SECONDS
                while not self.job.paths.result_pickle.exists() and time.time() < deadline:
                    time.sleep(1)
                if not self.job.paths.result_pickle.exists():
                    return self.interrupted(f"state {state or 'no longer known to slurmctld'}")
                break
            time.sleep(POLL_SECONDS)
        self.wait_for_end()
        try:
            return self.job.results()
        except submitit.core.utils.UncompletedJobError as error:
            lines = str(error).splitlines()
            return self.interrupted(lines[1] if len(lines) > 1 else str(error))


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        # The SLURM job id of each job of the last launch, in order
        self.job_ids: list[str] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        submit = submitit.AutoExecutor.map_array
        submitted: list[Any] = []

        def map_array(executor: Any, function: Any, *iterables: Any) -> list[JobOutcome]:
            jobs = submit(executor, function, *iterables)
            submitted.extend(jobs)
            return [JobOutcome(job, overrides) for job, overrides in zip(jobs, job_overrides, strict=True)]

        # The parent builds the executor and waits on the jobs inside launch(); the patch lasts for this call.
        with mock.patch.object(submitit.AutoExecutor, "map_array", map_array):
            returns = super().launch(job_overrides, initial_job_idx)
        self.job_ids = [job.job_id for job in submitted]
        return returns
