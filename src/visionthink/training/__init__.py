"""Training: the GRPO LightningModule, its callbacks and the run assembly."""
