"""Evaluation: metrics, subgroup slices, threshold calibration, HTML reports and run comparison.

    from faceattr.evaluate import EvalConfig, evaluate_model, write_report
    ev = evaluate_model(EvalConfig(model="runs/exp", data_root="../shared/celeba", split="valid"))
    ev.result["mean_f1"]; write_report(ev, "report/")

The JSON format of ``ev.result`` is documented in `faceattr.evaluate.schema`. This package never
imports `faceattr.train` or `faceattr.infer`. Names are loaded on first use, so importing the
package (and the CLI) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

__all__ = [
    "EVAL_SCHEMA",
    "EvalConfig",
    "Evaluation",
    "attribute_metrics",
    "calibrate_thresholds",
    "check_report_dir",
    "compare_runs",
    "evaluate_model",
    "metric_block",
    "render_markdown",
    "subgroup_metrics",
    "write_comparison",
    "write_json",
    "write_report",
]

_WHERE = {
    "EvalConfig": "evaluator",
    "Evaluation": "evaluator",
    "evaluate_model": "evaluator",
    "write_json": "evaluator",
    "write_report": "report",
    "check_report_dir": "report",
    "metric_block": "metrics",
    "attribute_metrics": "metrics",
    "subgroup_metrics": "metrics",
    "calibrate_thresholds": "metrics",
    "compare_runs": "compare",
    "write_comparison": "compare",
    "render_markdown": "compare",
    "EVAL_SCHEMA": "schema",
}

if TYPE_CHECKING:
    from faceattr.evaluate.compare import (
        compare_runs,
        render_markdown,
        write_comparison,
    )
    from faceattr.evaluate.evaluator import (
        EvalConfig,
        Evaluation,
        evaluate_model,
        write_json,
    )
    from faceattr.evaluate.metrics import (
        attribute_metrics,
        calibrate_thresholds,
        metric_block,
        subgroup_metrics,
    )
    from faceattr.evaluate.report import check_report_dir, write_report
    from faceattr.evaluate.schema import EVAL_SCHEMA


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
