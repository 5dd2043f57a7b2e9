"""A SLURM launcher (``hydra/launcher=slurm``): hydra-submitit-launcher's, with an outcome for
every trial's job, so one cancelled job does not take the others' results with it."""
