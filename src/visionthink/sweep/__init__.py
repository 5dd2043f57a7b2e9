"""Sweeps: the MLflow parent run of a study, and its Pareto report (the sweeper itself is the
Hydra plugin in src/hydra_plugins/visionthink_optuna)."""
