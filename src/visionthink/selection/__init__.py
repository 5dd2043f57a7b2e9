"""Preparing a run: data selection by dual-resolution rollouts (paper 3.5) and the prompt probe (C.3)."""
