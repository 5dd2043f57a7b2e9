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
    import torch
    from hydra.utils import instantiate

    from visionthink.data.images import load_image
    from visionthink.data.sample import Sample
    from visionthink.episode.builder import EpisodeBuilder
    from visionthink.errors import InputError
    from visionthink.models.loading import load_trained_policy
    from visionthink.rollout import EpisodeDriver, RolloutConfig, SamplingConfig, TransformersRolloutEngine

    torch.manual_seed(cfg.seed)
    if not str(cfg.question).strip():
        raise InputError("the question is empty", 'Pass question="..."')
    resolution = instantiate(cfg.resolution)
    image = load_image(str(cfg.image))
    resolution.check(image)
    _, policy, processor = load_trained_policy(
        instantiate(cfg.model), cfg.get("checkpoint"), resolution.processor_size()
    )
    builder = EpisodeBuilder(processor, instantiate(cfg.prompt), resolution)
    driver = EpisodeDriver(
        TransformersRolloutEngine(policy, processor.tokenizer),
        builder,
        RolloutConfig(group_size=1, max_images=cfg.max_images, max_turns=cfg.max_turns),
    )
    sample = Sample(sample_id="input", image=image, question=str(cfg.question), answer="?")
    (trajectory,) = driver.run(
        [builder.build(sample, cfg.mode)], SamplingConfig(greedy=True, max_new_tokens=cfg.max_new_tokens)
    )
    answer = trajectory.final_answer
    report = {
        "mode": cfg.mode,
        "turns": trajectory.turn_texts,
        "used_high_res": trajectory.used_high_res,
        "visual_tokens": {
            "first_view": trajectory.images[0].visual_tokens,
            "high_res": trajectory.images[1].visual_tokens if trajectory.used_high_res else 0,
            "total": trajectory.visual_tokens,
            "always_high_res": trajectory.episode.high_view.visual_tokens,
        },
        "answer": answer.answer if answer else None,
        "end_reason": trajectory.end_reason,
    }
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
