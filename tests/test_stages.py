"""The reproduction's stages are run again when their recipe or their inputs changed, and only then."""

from __future__ import annotations

import json

from hydra import initialize_config_dir

from conftest import ROOT
from visionthink.reproduce.stages import Stage, fingerprints, run_stages, settings

# A stand-in entry point: writes the stage's output file (its first argument) and counts its runs
# beside it. An absolute script path replaces src/<script> in the command line.
SCRIPT = """
import pathlib, sys
output = pathlib.Path(sys.argv[1])
output.parent.mkdir(parents=True, exist_ok=True)
runs = output.parent / "runs"
runs.write_text(str(int(runs.read_text()) + 1) if runs.exists() else "1")
output.write_text("done")
"""


def chain(tmp_path):
    """A base, the GRPO run that starts from it, its evaluation, and a second base whose folder name
    starts with the first's."""
    base = tmp_path / "pretrain" / "x-base"
    other = tmp_path / "pretrain" / "x-base-resize_only"
    run = tmp_path / "runs" / "x-grpo"
    return [
        Stage("base", "pretrain.py", ["seed=0"], base / "perception.json"),
        Stage("other", "pretrain.py", ["seed=0", "tool=resize"], other / "perception.json"),
        Stage("grpo", "train.py", [f"model.name_or_path={base}/model"], run / "final_metrics.json"),
        Stage("eval", "evaluate.py", [f"checkpoint={run}/checkpoints/last.ckpt"], tmp_path / "eval" / "x" / "r.json"),
    ]


def test_a_changed_stage_changes_its_own_fingerprint_and_those_of_the_stages_that_read_it(tmp_path):
    stages = chain(tmp_path)
    recipe = {stage.name: f"settings of {stage.name}" for stage in stages}
    before = fingerprints(stages, lambda stage: recipe[stage.name])
    assert fingerprints(stages, lambda stage: recipe[stage.name]) == before
    recipe["base"] += " changed"
    after = fingerprints(stages, lambda stage: recipe[stage.name])
    assert {name for name in before if before[name] != after[name]} == {"base", "grpo", "eval"}


def test_the_composed_settings_follow_a_recipe_change_the_command_line_does_not_show(tmp_path):
    stage = Stage("grpo", "train.py", ["experiment=miniature_zoom", "seed=1"], tmp_path / "final_metrics.json")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        default = settings(stage)
        assert settings(stage) == default
        # What an edit of conf/experiment/miniature_zoom.yaml would change
        changed = Stage(stage.name, stage.script, [*stage.overrides, "rollout.sampling.temperature=0.5"], stage.output)
        assert settings(changed) != default
        assert "seed: 1" in default


def test_a_stage_is_skipped_with_its_fingerprint_and_run_again_without_its_old_outputs_otherwise(tmp_path):
    script = tmp_path / "entry.py"
    script.write_text(SCRIPT)
    output = tmp_path / "runs" / "x" / "final_metrics.json"
    stage = Stage("grpo", str(script), [str(output)], output)
    log_dir = tmp_path / "stages"
    runs = output.parent / "runs"

    (first,) = run_stages([stage], log_dir, {"grpo": "a"})
    assert runs.read_text() == "1" and first["fingerprint"] == "a" and first["seconds"] > 0
    (second,) = run_stages([stage], log_dir, {"grpo": "a"})
    assert runs.read_text() == "1" and second["fingerprint"] == "a"

    stale = output.parent / "checkpoints" / "last.ckpt"
    stale.parent.mkdir()
    stale.write_text("weights of the old recipe")
    run_stages([stage], log_dir, {"grpo": "b"})
    # The folder was removed before the stage ran again: its run count starts over, and no
    # checkpoint of the old recipe is left for an evaluation to read
    assert runs.read_text() == "1" and not stale.exists()
    assert json.loads((log_dir / "stages.json").read_text())["grpo"]["fingerprint"] == "b"

    # A record from before fingerprints were kept proves nothing about the settings
    (log_dir / "stages.json").write_text(json.dumps({"grpo": {"command": "python x", "seconds": 1.0}}))
    stale.parent.mkdir()
    stale.write_text("weights of an unknown recipe")
    run_stages([stage], log_dir, {"grpo": "b"})
    assert output.exists() and not stale.exists()
    assert json.loads((log_dir / "stages.json").read_text())["grpo"]["fingerprint"] == "b"
