"""GRPO as pure functions: group advantages, the clipped loss, and trajectory log-probs.

from visionthink.grpo import group_advantages, grpo_loss
"""

from visionthink.grpo.advantages import group_advantages, zero_variance_groups
from visionthink.grpo.logprobs import token_logprobs, trajectory_logprobs
from visionthink.grpo.loss import aggregate_tokens, grpo_loss, kl_penalty

__all__ = [
    "aggregate_tokens",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "token_logprobs",
    "trajectory_logprobs",
    "zero_variance_groups",
]
