"""The sweeper: ask Optuna for trials, launch them with Hydra's launcher, tell Optuna the results.

The study lives in persistent storage (``sqlite:///outputs/optuna.db``), so a sweep that was
killed resumes: finished trials are kept, trials left RUNNING are marked FAIL and re-queued
with the same parameters. A trial that raises is recorded as FAIL and the sweep goes on. A trial
stopped from outside (its SLURM job cancelled or lost) is recorded FAIL as interrupted, and the
sweep stops after that batch, since a cancel is somebody's decision; running the same command
again re-queues it.
"""

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from visionthink.errors import TrialInterrupted

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"
SLURM_JOB = "slurm_job_id"


class SweepStopped(RuntimeError):
    """The sweep stopped early because one of its trials was interrupted."""


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.visionthink_optuna.sweeper.OptunaSweeper"
    study_name: str = "visionthink"
    # null: an in-memory study (nothing survives a kill)
    storage: str | None = None
    # One per value the task returns: maximize | minimize
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    # Objective names, for reports (defaults to the task's optimized_metrics)
    objective_names: list[str] | None = None
    n_trials: int = 10
    # Trials launched together (the launcher may run them in parallel)
    n_jobs: int = 1
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": 0})
    # key: interval(a, b) | tag(log, interval(a, b)) | int(interval(a, b)) | range(a, b, step) | choice(x, y)
    params: dict[str, str] = field(default_factory=dict)
    # Re-run, with the same parameters, trials a killed sweep left unfinished
    retry_interrupted: bool = True
    # Write the Pareto plot and table (outputs/sweeps/<study>/) and log them to MLflow at the end
    report: bool = True


ConfigStore.instance().store(
    group="hydra/sweeper", name="visionthink_optuna", node=OptunaSweeperConf, provider="visionthink"
)


def distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution from a Hydra sweep override."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution([v for v in value.list])
    if isinstance(value, RangeSweep):
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: use interval(), range() or choice() for an Optuna parameter")


def reseed(sampler: optuna.samplers.BaseSampler, seed: int) -> None:
    """Seed a sampler's random streams (Optuna's ``reseed_rng`` takes no seed): TPE and the
    random sampler it starts with keep them in ``_rng``."""
    for holder in (sampler, getattr(sampler, "_random_sampler", None)):
        state = getattr(holder, "_rng", None)
        if state is not None:
            state.rng.seed(seed % 2**32)


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _parse(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{key}={value}" for key, value in (self.settings["params"] or {}).items()]
        space, fixed = {}, []
        for override in parser.parse_overrides(params + list(arguments)):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
        if not space:
            raise ValueError(
                "the Optuna sweeper needs at least one parameter (hydra.sweeper.params or key=interval(...))"
            )
        return space, fixed

    def _study(self) -> optuna.Study:
        settings = self.settings
        sampler = settings["sampler"]  # Hydra instantiates it with the sweeper
        if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
            sampler = instantiate(sampler)
        storage = settings["storage"]
        if storage and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=settings["study_name"],
            storage=settings["storage"],
            sampler=sampler,
            directions=list(settings["directions"]),
            load_if_exists=True,
        )
        if study.trials:
            # A resumed sweep: a sampler seeded as at the start would propose the same values again.
            reseed(study.sampler, zlib.crc32(study.study_name.encode()) + len(study.trials))
        return study

    def _mark_interrupted(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | optuna.Trial) -> None:
        from visionthink.sweep.tracking import mark_trial_runs_killed

        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        study.tell(trial.number, state=TrialState.FAIL)
        mark_trial_runs_killed(self.config.logger.mlflow, study.study_name, trial.number)

    def _recover_interrupted(self, study: optuna.Study) -> None:
        """Trials a killed sweep left RUNNING become interrupted failures; every interrupted trial
        not yet retried is queued again with its parameters."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._mark_interrupted(study, trial)
            log.warning("trial %d of study %s was interrupted; marked FAIL", trial.number, study.study_name)
        if not self.settings["retry_interrupted"]:
            return
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get(RETRY_OF) for t in trials}
        for trial in trials:
            if trial.user_attrs.get(INTERRUPTED) and trial.params and trial.number not in retried:
                study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
                log.info("trial %d re-queued with its parameters %s", trial.number, trial.params)

    @staticmethod
    def finished(study: optuna.Study) -> int:
        """Trials that count towards n_trials: complete ones, and failures that were not interruptions."""
        states = (TrialState.COMPLETE, TrialState.FAIL)
        return sum(1 for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(INTERRUPTED))

    def sweep(self, arguments: list[str]) -> Any:
        space, fixed = self._parse(arguments)
        study = self._study()
        self._recover_interrupted(study)
        from visionthink.sweep.tracking import end_sweep_parent_run, sweep_parent_run

        parent_run_id = sweep_parent_run(self.config, study.study_name)
        job_index = len(study.trials)
        returns = []
        while (remaining := self.settings["n_trials"] - self.finished(study)) > 0:
            trials = [study.ask(space) for _ in range(min(self.settings["n_jobs"], remaining))]
            batch = [
                fixed
                + [f"{key}={value}" for key, value in trial.params.items()]
                + [
                    f"run_name={study.study_name}-trial{trial.number:03d}",
                    f"++sweep.study={study.study_name}",
                    f"++sweep.trial={trial.number}",
                    f"++sweep.parent_run_id={parent_run_id}",
                ]
                for trial in trials
            ]
            results = self.launcher.launch(batch, initial_job_idx=job_index)
            job_index += len(batch)
            for trial, job_id in zip(trials, getattr(self.launcher, "job_ids", None) or [], strict=False):
                trial.set_user_attr(SLURM_JOB, job_id)
            interrupted = []
            for trial, result in zip(trials, results, strict=True):
                try:
                    values = result.return_value
                    values = list(values) if isinstance(values, (list, tuple)) else [values]
                    study.tell(trial, [float(v) for v in values])
                    log.info("trial %d: %s -> %s", trial.number, trial.params, values)
                except TrialInterrupted as error:
                    self._mark_interrupted(study, trial)
                    interrupted.append(f"trial {trial.number} ({error})")
                except Exception as error:  # the trial itself failed; record it and go on
                    study.tell(trial, state=TrialState.FAIL)
                    log.error("trial %d failed: %s", trial.number, error)
            returns.append(results)
            if interrupted:
                end_sweep_parent_run(self.config, parent_run_id, status="KILLED")
                raise SweepStopped(
                    f"{'; '.join(interrupted)} was stopped from outside and is recorded FAIL. Run the same "
                    "command again to re-queue it with its parameters and finish the study."
                )
        if self.settings["report"]:
            from visionthink.sweep.report import write_report

            names = self.settings["objective_names"] or list(self.config.get("optimized_metrics") or [])
            outputs_dir = OmegaConf.select(self.config, "paths.outputs_dir", default="outputs")
            write_report(study, names, outputs_dir, self.config.logger.mlflow, parent_run_id)
        end_sweep_parent_run(self.config, parent_run_id)
        return returns
