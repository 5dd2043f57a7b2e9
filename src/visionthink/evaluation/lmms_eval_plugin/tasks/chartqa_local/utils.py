"""lmms-eval's own ChartQA hooks, for the local copy."""

from lmms_eval.tasks.chartqa.utils import (  # noqa: F401 (the task's YAML names them)
    chartqa_doc_to_text,
    chartqa_doc_to_visual,
    chartqa_process_results,
)
