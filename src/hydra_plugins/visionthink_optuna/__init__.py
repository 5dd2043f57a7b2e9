"""A Hydra sweeper backed by current Optuna (``hydra/sweeper=visionthink_optuna``).

hydra-optuna-sweeper pins optuna<3, whose sqlite storage fails under SQLAlchemy 2; this plugin
keeps the ``-m`` experience with optuna 5's persistent storage and samplers, and hands trials to
whatever Hydra launcher is configured (basic, submitit_local, SLURM).
"""
