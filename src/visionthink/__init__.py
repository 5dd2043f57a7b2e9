"""VisionThink: learn, by multi-turn GRPO, when a VLM should ask for the full-resolution image.

The package follows the data flow of one training step; each stage is importable on its own:

    data      -> samples (image, question, answer) from the released or generic datasets
    episode   -> the low-resolution first turn: resolution views, prompts, turn parser
    rollout   -> multi-turn generation with the resize tool (engine-agnostic driver)
    reward    -> judges, format reward, penalty control
    grpo      -> group advantages, the clipped policy loss, log-probs
    sync      -> pushing trained weights to the rollout engine
    metrics   -> what a step did, for MLflow
    training  -> the LightningModule and the run assembly that ties the stages together
"""
