"""Evaluation: adaptive vs full vs low resolution on benchmarks, with token and time accounting."""
