"""Profile our GRPO step on every benchmark row and print the medians as JSON (`make bench` runs
the same profiles; this is for comparing source trees, e.g. before and after an optimisation):

    PYTHONPATH=<tree>/src python <tree>/tests/benchmarks/profile_rows.py > profile.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import grpo_step  # noqa: E402
from run import RESOLUTION, SIZES, dataset  # noqa: E402

from visionthink.models import ModelConfig  # noqa: E402


def main() -> None:
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (name, spec) in SIZES.items():
            path = str(ModelConfig(tiny=spec, tiny_name=name).resolve_path())
            for size in (224, 448):
                data = str(dataset(Path(tmp), size))
                rows[f"{label}, {size} px"] = grpo_step.profile(path, data, RESOLUTION)
        name, spec = SIZES["tiny_10m (10M)"]
        path = str(ModelConfig(tiny=spec, tiny_name=name).resolve_path())
        data = str(dataset(Path(tmp), 224))
        rows["tiny_10m (10M), 224 px, half two turns"] = grpo_step.profile(path, data, RESOLUTION, multi_turn=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
