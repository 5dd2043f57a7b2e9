"""Metrics: what the rollouts of a step did (``rollouts``) and how the ranks' figures combine
(``distributed``; imported by the stages that produce counts and durations, so nothing is
imported here)."""
