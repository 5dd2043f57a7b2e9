"""Audit a judge against human labels.

python src/judge_audit.py                                   # the rule judge on data/judge_audit/audit.jsonl
python src/judge_audit.py judge=local                       # SmolLM2-135M, offline
python src/judge_audit.py judge=openai judge.base_url=http://host:8000/v1 judge.model=NAME audit.data=mine.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="judge_audit")
@exit_on_input_error
def main(cfg: DictConfig) -> float:
    from hydra.utils import instantiate

    from visionthink.reward.judges.audit import load_audit_rows, run_audit
    from visionthink.tracking import mlflow_run

    rows = load_audit_rows(cfg.audit.data)
    judge = instantiate(cfg.judge)
    try:
        report = run_audit(judge, rows, cfg.audit.batch_size)
    finally:
        judge.close()
    report = {"judge": cfg.judge._target_.rsplit(".", 1)[-1], "data": str(cfg.audit.data), **report}
    output = Path(cfg.paths.output_dir) / "report.json"
    output.write_text(json.dumps(report, indent=2))
    summary = {
        k: report[k]
        for k in ("n", "agreement", "false_positive_rate", "false_negative_rate", "invalid_rate", "seconds")
    }
    print(json.dumps(summary, indent=2))
    with mlflow_run(cfg.mlflow, run_name=f"{report['judge']}-{cfg.run_name}") as (client, run_id):
        client.log_param(run_id, "judge", report["judge"])
        client.log_param(run_id, "data", report["data"])
        for key, value in summary.items():
            client.log_metric(run_id, f"audit/{key}", float(value))
        client.log_artifact(run_id, str(output))
    print(f"report: {output}")
    return report["agreement"]


if __name__ == "__main__":
    main()
