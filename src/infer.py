"""Ask a VisionThink policy one question about one image and show what it did.

python src/infer.py image=photo.jpg question="What does the sign say?"
python src/infer.py image=photo.jpg question="..." json=true           # one JSON object, for scripts
python src/infer.py image=... question=... model=qwen2_5_vl_7b model.name_or_path=/models/VisionThink-7B resolution=paper
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="infer")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    from visionthink.evaluation.inference import infer

    report = infer(cfg)
    if cfg.json:
        print(json.dumps(report))
        return
    for index, text in enumerate(report["turns"], start=1):
        print(f"--- turn {index} ---\n{text}")
    tokens = report["visual_tokens"]
    print("--- summary ---")
    print(f"asked for high resolution: {'yes' if report['used_high_res'] else 'no'}")
    print(
        f"visual tokens: {tokens['total']} (first view {tokens['first_view']}, high resolution {tokens['high_res']}; "
        f"always high resolution would be {tokens['always_high_res']})"
    )
    print(f"answer: {report['answer'] if report['answer'] is not None else '(none: ' + report['end_reason'] + ')'}")


if __name__ == "__main__":
    main()
