"""The layout follows the data flow: the stage packages (sample -> episode -> rollout -> rewards ->
GRPO -> weight sync -> metrics) import nothing of the trainer, and entry points share one set-up."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "src" / "visionthink"
STAGES = ("data", "episode", "rollout", "reward", "grpo", "sync", "metrics", "models")


def imported_modules(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_no_stage_package_imports_the_trainer():
    offenders = [
        f"{path.relative_to(ROOT)}: {module}"
        for stage in STAGES
        for path in sorted((PACKAGE / stage).rglob("*.py"))
        for module in imported_modules(path)
        if module == "visionthink.training" or module.startswith("visionthink.training.")
    ]
    assert offenders == []


def test_entry_points_set_nothing_up_themselves():
    # visionthink.cli (which every entry point imports) locates the project for the configs
    preambles = [path.name for path in sorted((ROOT / "src").glob("*.py")) if "VISIONTHINK_ROOT" in path.read_text()]
    assert preambles == []
    assert all("from visionthink.cli import" in path.read_text() for path in (ROOT / "src").glob("*.py"))


def test_the_readme_layout_names_every_entry_point_and_config_group():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :].split("```")[1]
    entry_points = [f"src/{path.name}" for path in sorted((ROOT / "src").glob("*.py"))]
    groups = [f"{path.name}/" for path in sorted((ROOT / "conf").iterdir()) if path.is_dir()]
    missing = [name for name in [*entry_points, *groups, "src/hydra_plugins/"] if name not in layout]
    assert missing == []


def test_the_method_doc_names_every_package():
    method = (ROOT / "docs" / "method.md").read_text()
    packages = [path.name for path in sorted(PACKAGE.iterdir()) if path.is_dir() and path.name != "__pycache__"]
    assert [name for name in packages if f"`visionthink.{name}`" not in method] == []


STAGE_BUILDERS = {"EpisodeBuilder", "EpisodeDriver", "SampleDataset", "TransformersRolloutEngine", "load_backend",
                  "SFTModule", "VisionThinkGRPO", "Trainer"}  # fmt: skip


def test_entry_points_delegate_to_the_library_and_build_no_stage():
    wiring = {}
    for path in sorted((ROOT / "src").glob("*.py")):
        names = {node.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)}
        names |= {
            a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom) for a in n.names
        }
        if names & STAGE_BUILDERS:
            wiring[path.name] = sorted(names & STAGE_BUILDERS)
    assert wiring == {}


def test_a_training_step_never_calls_back_into_the_module(tmp_path, monkeypatch):
    """The module orders the stages; no stage (rollout, rewards, the GRPO update and its strategy
    hooks, weight sync) calls a function of training/module.py during a step."""
    import sys

    from conftest import TOOL_TURN, answer_turn, train_in_process
    from visionthink.training import module as module_py

    callbacks = []

    def profiler(frame, event, arg):
        caller = frame.f_back
        called_from = caller.f_code.co_filename if caller is not None else module_py.__file__
        if event == "call" and frame.f_code.co_filename == module_py.__file__ and called_from != module_py.__file__:
            callbacks.append(f"{frame.f_code.co_name} <- {called_from}:{caller.f_code.co_name}")

    training_step = module_py.VisionThinkGRPO.training_step

    def traced(self, batch, batch_idx):
        sys.setprofile(profiler)
        try:
            return training_step(self, batch, batch_idx)
        finally:
            sys.setprofile(None)

    monkeypatch.setattr(module_py.VisionThinkGRPO, "training_step", traced)
    turns = iter([answer_turn("red"), TOOL_TURN] * 64)
    policy = lambda request: answer_turn("red") if len(request.images) > 1 else next(turns)  # noqa: E731
    train_in_process(tmp_path, ["trainer.max_steps=1", "data.val=null", "optimized_metrics=[]"], script=policy)
    assert callbacks == ["training_step <- " + __file__ + ":traced"]  # the step itself, entered by the tracer
