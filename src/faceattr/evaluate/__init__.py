"""Evaluation: metrics, subgroup slices, threshold calibration, HTML reports and run comparison.

    from faceattr.evaluate import EvalConfig, evaluate_model, write_report
    ev = evaluate_model(EvalConfig(model="runs/exp", data_root="../shared/celeba", split="valid"))
    ev.result["mean_f1"]; write_report(ev, "report/")

    from faceattr.evaluate import UtkEvalConfig, evaluate_utkface
    ev = evaluate_utkface(UtkEvalConfig(model="runs/exp", data_root="../shared/utkface"))
    ev.result["groups"]["headline"]["adults"]["gender_accuracy"]; write_report(ev, "report/")

The JSON format of ``ev.result`` is documented in `faceattr.evaluate.schema`. This package never
imports `faceattr.train`; UTKFace evaluation (`utk`) imports `faceattr.infer` when it runs, to go
through the detect-and-align path of `faceattr predict`. Names are loaded on first use, so
importing the package (and the CLI) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faceattr._lazy import lazy_exports

__all__ = [
    "EVAL_SCHEMA",
    "EvalConfig",
    "Evaluation",
    "UtkEvalConfig",
    "UtkEvaluation",
    "attribute_metrics",
    "calibrate_thresholds",
    "check_report_dir",
    "compare_runs",
    "evaluate_model",
    "evaluate_utkface",
    "group_metrics",
    "lipstick_shortcut",
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
    "UtkEvalConfig": "utk",
    "UtkEvaluation": "utk",
    "evaluate_utkface": "utk",
    "group_metrics": "groups",
    "lipstick_shortcut": "groups",
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
    from faceattr.evaluate.groups import group_metrics, lipstick_shortcut
    from faceattr.evaluate.metrics import (
        attribute_metrics,
        calibrate_thresholds,
        metric_block,
        subgroup_metrics,
    )
    from faceattr.evaluate.report import check_report_dir, write_report
    from faceattr.evaluate.schema import EVAL_SCHEMA
    from faceattr.evaluate.utk import UtkEvalConfig, UtkEvaluation, evaluate_utkface


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
