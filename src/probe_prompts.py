"""Which prompt makes the base model call the resize tool? (paper C.3)

python src/probe_prompts.py                                          # agent, simple_resize, simple_think_resize
python src/probe_prompts.py -m prompt=agent,simple_resize run_name=p  # one job per prompt (multirun)
python src/probe_prompts.py model=qwen2_5_vl_7b resolution=paper data=visionthink data.val.path=...
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from visionthink.cli import exit_on_input_error


@hydra.main(version_base="1.3", config_path="../conf", config_name="probe_prompts")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    from visionthink.selection.prompt_probe import markdown
    from visionthink.selection.runs import run_probe

    results, output = run_probe(cfg)
    print(markdown(results))
    print(f"results: {output}")


if __name__ == "__main__":
    main()
