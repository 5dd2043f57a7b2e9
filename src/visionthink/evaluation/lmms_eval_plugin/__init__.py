"""VisionThink as an lmms-eval model (``lmms-eval --model visionthink``), registered through
lmms-eval's ``lmms_eval.models`` entry point (pyproject.toml): installing this project is all it
takes. The model class lives in :mod:`.model`, which lmms-eval imports only when it is asked for;
the tasks over local files are in ``tasks/`` (``--include_path``, docs/evaluation.md)."""

from __future__ import annotations

from pathlib import Path

MODEL_NAME = "visionthink"
TASKS_DIR = Path(__file__).parent / "tasks"


def manifests():
    """The entry point's payload; lmms-eval calls it while it builds its model registry."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.model.VisionThink")]
