"""The paper's claims, checked against the miniature's numbers with thresholds fixed beforehand
(``conf/reproduce.yaml``, ``claims``). A claim is reproduced when it holds for every seed.

``measured`` per seed holds the adaptive-mode evaluation figures of each GRPO variant
(``results.json``'s ``synthetic.adaptive``), the base model's full-resolution figures
(``base_full``), and the theta sweep as ``(theta, resize ratio)`` pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Claim:
    key: str
    statement: str
    threshold: str
    # Per seed: the numbers, and whether the claim holds.
    evidence: dict[int, str]
    holds: dict[int, bool]

    @property
    def reproduced(self) -> bool:
        return bool(self.holds) and all(self.holds.values())


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def check_claims(thresholds: Any, measured: dict[int, dict[str, Any]]) -> list[Claim]:
    t = thresholds
    claims = [
        Claim("a", "With the paper's penalty the policy asks for the image on label questions and not on coarse ones",
              f"resize ratio on label questions >= {_pct(t.label_gap)} points above coarse ones", {}, {}),
        Claim("b", "Adaptive resolution keeps the base model's full-resolution accuracy at a fraction of its visual tokens",
              f"accuracy >= {_pct(t.accuracy_share)} of the base's full-resolution accuracy at <= {_pct(t.token_share)} "
              "of its visual tokens", {}, {}),
        Claim("c", "Without a penalty the policy drifts toward always asking (paper Fig. 3)",
              f"resize ratio on coarse questions >= {_pct(t.no_penalty_coarse_gain)} points above the paper penalty's", {}, {}),
        Claim("d", "With a flat penalty on every request it stops asking, and label questions fall to a guess (paper Fig. 3)",
              f"resize ratio <= {_pct(t.flat_resize_ratio)} and label accuracy <= {_pct(t.flat_label_accuracy)}", {}, {}),
        Claim("e", "Theta moves the resize ratio monotonically (paper Fig. 8)",
              f"resize ratio non-decreasing in theta over >= 3 values, spanning >= {_pct(t.theta_span)}", {}, {}),
        Claim("f", "The learned decision matches which questions need the image",
              f"precision and recall against use_tool >= {t.decision}", {}, {}),
    ]  # fmt: skip
    by_key = {claim.key: claim for claim in claims}
    for seed, m in measured.items():
        paper, none, flat, full = m.get("paper"), m.get("no_penalty"), m.get("flat_penalty"), m.get("base_full")
        if paper:
            label, coarse = paper["resize_ratio/needs_high_res"], paper["resize_ratio/low_res_enough"]
            by_key["a"].evidence[seed] = f"label {_pct(label)}, coarse {_pct(coarse)}"
            by_key["a"].holds[seed] = label - coarse >= t.label_gap
            precision, recall = paper["decision_precision"], paper["decision_recall"]
            by_key["f"].evidence[seed] = f"precision {precision:.2f}, recall {recall:.2f}"
            by_key["f"].holds[seed] = precision >= t.decision and recall >= t.decision
        if paper and full and full["score"] and full["visual_tokens"]:
            accuracy, tokens = paper["score"] / full["score"], paper["visual_tokens"] / full["visual_tokens"]
            by_key["b"].evidence[seed] = (f"accuracy {paper['score']:.1f} vs {full['score']:.1f} ({_pct(accuracy)}), "
                                          f"visual tokens {paper['visual_tokens']:.1f} vs {full['visual_tokens']:.1f} ({_pct(tokens)})")  # fmt: skip
            by_key["b"].holds[seed] = accuracy >= t.accuracy_share and tokens <= t.token_share
        if paper and none:
            gain = none["resize_ratio/low_res_enough"] - paper["resize_ratio/low_res_enough"]
            by_key["c"].evidence[seed] = (f"coarse {_pct(none['resize_ratio/low_res_enough'])} without a penalty vs "
                                          f"{_pct(paper['resize_ratio/low_res_enough'])}; overall {_pct(none['resize_ratio'])}")  # fmt: skip
            by_key["c"].holds[seed] = gain >= t.no_penalty_coarse_gain
        if flat:
            label_accuracy = flat["score/needs_high_res"] / 100
            by_key["d"].evidence[seed] = (
                f"resize ratio {_pct(flat['resize_ratio'])}, label accuracy {_pct(label_accuracy)}"
            )
            by_key["d"].holds[seed] = (
                flat["resize_ratio"] <= t.flat_resize_ratio and label_accuracy <= t.flat_label_accuracy
            )
        sweep = sorted(m.get("theta", []))
        if sweep:
            ratios = [ratio for _, ratio in sweep]
            by_key["e"].evidence[seed] = ", ".join(f"theta {theta}: {_pct(ratio)}" for theta, ratio in sweep)
            monotone = all(b >= a for a, b in zip(ratios, ratios[1:], strict=False))
            by_key["e"].holds[seed] = len(sweep) >= 3 and monotone and ratios[-1] - ratios[0] >= t.theta_span
    return claims
