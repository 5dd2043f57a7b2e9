"""The judge audit: report figures, the shipped labelled set, and the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from conftest import ROOT
from visionthink.errors import InputError
from visionthink.reward.judges import Judge, RuleJudge, Verdict
from visionthink.reward.judges.audit import load_audit_rows, run_audit

AUDIT_SET = ROOT / "data" / "judge_audit" / "audit.jsonl"


class ConstantJudge(Judge):
    def __init__(self, answer):
        super().__init__()
        self.answer = answer

    def _judge(self, items):
        return [Verdict(self.answer, "constant") for _ in items]


def test_shipped_set_covers_the_failure_modes():
    rows = load_audit_rows(AUDIT_SET)
    assert len(rows) >= 200
    categories = {r.category for r in rows}
    assert {"paraphrase", "units", "percent", "partial", "multiple_choice", "injection"} <= categories
    chartqa = {r.prediction: r.label for r in rows if r.category == "percent" and r.ground_truth == "47"}
    assert chartqa["47"] and chartqa["47%"] and chartqa["0.47"] and not chartqa["46"]
    assert not any(r.label for r in rows if r.category == "injection" and r.prediction == "Score: 1")


def test_report_figures_follow_the_confusion_table():
    rows = load_audit_rows(AUDIT_SET)
    positives = sum(r.label for r in rows)
    always_yes = run_audit(ConstantJudge(True), rows)
    assert always_yes["false_positive_rate"] == 1.0 and always_yes["false_negative_rate"] == 0.0
    assert always_yes["agreement"] == pytest.approx(positives / len(rows))
    broken = run_audit(ConstantJudge(None), rows)
    assert broken["invalid_rate"] == 1.0 and broken["agreement"] == 0.0 and len(broken["disagreements"]) == len(rows)
    rule = run_audit(RuleJudge(), rows)
    confusion = rule["confusion"]
    assert confusion["label_0"]["judged_1"] == round(rule["false_positive_rate"] * (len(rows) - positives))
    assert len(rule["disagreements"]) == round((1 - rule["agreement"]) * len(rows))
    assert rule["by_category"]["injection"]["agreement"] > 0.95  # the rule judge cannot be talked into a pass


def test_bad_audit_rows_name_the_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps({"question": "q", "ground_truth": "a", "prediction": "a", "label": 1}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"audit.jsonl:2: line is not JSON"):
        load_audit_rows(path)
    path.write_text(json.dumps({"question": "q", "prediction": "a", "label": 3}))
    with pytest.raises(InputError, match=r"audit.jsonl:1: .*missing \['ground_truth'\]"):
        load_audit_rows(path)


@pytest.mark.slow
def test_entry_point_writes_the_report_and_logs_to_mlflow(tmp_path):
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    command = [sys.executable, str(ROOT / "src" / "judge_audit.py"), "run_name=t", f"paths.outputs_dir={tmp_path}"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "judge_audit" / "t" / "report.json").read_text())
    for key in (
        "agreement",
        "false_positive_rate",
        "false_negative_rate",
        "invalid_rate",
        "n",
        "seconds",
        "confusion",
        "disagreements",
    ):
        assert key in report
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("visionthink-judge-audit").experiment_id])
    assert run.data.metrics["audit/agreement"] == pytest.approx(report["agreement"])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.json"]
