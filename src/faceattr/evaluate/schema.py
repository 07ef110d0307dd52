"""The evaluation JSON (``faceattr evaluate --json``, ``eval.json`` in sweep runs): format and JSON Schema.

Schema version 1. Keys are stable; new keys may be added, none are renamed or removed without a
version bump. Rates are fractions in [0, 1]; ``null`` means "undefined on this data" (for example
ROC AUC when the split holds one class only, or a subgroup with no images)::

    {
      "schema_version": 1,
      "model": str,                  # what was asked for: a path, a run folder or a shipped name
      "checkpoint": str,             # the .safetensors file it resolved to
      "architecture": str,           # registry name, e.g. "mobilenet_v2"
      "output": "sigmoid" | "softmax",
      "data_root": str, "split": str, "limit": int, "holdout_fraction": float, "seed": int,
      "flip": bool,                  # predictions averaged with the mirrored image (--flip)
      "grayscale": bool,             # evaluated on black-and-white copies of the images (--grayscale)
      "swap_clothes": bool,          # collars pasted from people of the other sex (--swap-clothes) ...
      "n_swapped": int,              # ... into this many images (the others had no partner; 0 when off)
      "n_images": int,               # images evaluated (unreadable ones are left out ...)
      "n_skipped": int,              # ... and counted here
      "attributes": [str, ...],      # evaluated attributes, in model order
      "subgroup_attributes": [str, ...],

      # Overall metrics at threshold 0.5 (an "overall block"):
      "mean_accuracy": float, "mean_balanced_accuracy": float, "mean_f1": float,
      "mean_precision": float, "mean_recall": float,
      "mean_auc": float | null,      # mean over attributes where AUC is defined
      "exact_match": float,          # share of images with every selected attribute right
      "hamming_loss": float,         # share of wrong (image, attribute) decisions

      "per_attribute": {NAME: {
          "accuracy", "precision", "recall", "f1": float,
          "balanced_accuracy": float,    # (TPR + TNR) / 2; with one class present, that class's recall
          "auc": float | null,           # ROC AUC; null when the data holds one class only
          "positive_rate": float,        # share of positives in the data
          "predicted_positive_rate": float,
          "majority_baseline": float,    # accuracy of always predicting the majority class
          "threshold": float,            # probability >= threshold means "present"
          "confusion": [[tn, fp], [fn, tp]],
          "error_pos": float | null,     # fn / positives  (miss rate)
          "error_neg": float | null,     # fp / negatives  (false alarm rate)
          "n_pos": int, "n_neg": int}},

      # Fairness slices: for each grouping attribute, an overall block + per_attribute for the
      # images where it is absent ("0") and present ("1"), and "gap" = value("1") - value("0")
      # for every overall number and, under gap.per_attribute, for accuracy, precision, recall,
      # f1, balanced_accuracy, auc, error_pos and error_neg.
      "subgroups": {GROUP: {"0": block, "1": block, "gap": {...}}},

      # Thresholds other than 0.5: calibrated now (--calibrate) or stored in the checkpoint.
      "calibration": null | {
          "source": "this evaluation" | "checkpoint",
          "objective": "accuracy" | "balanced_accuracy" | "mixed" | null,
          "balanced_weight": float | null,  # mixed: accuracy + this x balanced accuracy
          "split": str | null, "n_images": int,  # the split the thresholds were chosen on
          "thresholds": {NAME: float},
          "cross_validated_gain": float | null,  # calibrated now: mean gain over 0.5 when thresholds
                                         # chosen on half the calibration people score the other half
          "saved": bool,                 # written into the checkpoint metadata (predict uses them)
          "same_split_as_evaluation": bool,
          "warning": str | null},        # set when calibrated on the reported split
      "calibrated": null | {overall block, "per_attribute": {...}, "subgroups": {...}},

      "warnings": [str, ...],        # e.g. evaluating on training images, calibrating on the test split
      "device": str, "images_per_s": float, "seconds": float, "created": str,
      "versions": {"faceattr": str, "torch": str, "torchvision": str}
    }

`EVAL_SCHEMA` is the same as a JSON Schema (draft 2020-12) for validators.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BLOCK_SCHEMA", "EVAL_SCHEMA", "PER_ATTRIBUTE_SCHEMA"]

_NUM = {"type": "number"}
_RATE = {"type": "number", "minimum": 0, "maximum": 1}
_RATE_OR_NULL = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_GAP = {"type": ["number", "null"], "minimum": -1, "maximum": 1}

PER_ATTRIBUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "accuracy", "precision", "recall", "f1", "balanced_accuracy", "auc", "positive_rate",
        "predicted_positive_rate", "majority_baseline", "threshold", "confusion", "error_pos", "error_neg",
        "n_pos", "n_neg",
    ],
    "properties": {
        "accuracy": _RATE_OR_NULL,
        "precision": _RATE_OR_NULL,
        "recall": _RATE_OR_NULL,
        "f1": _RATE_OR_NULL,
        "balanced_accuracy": _RATE_OR_NULL,
        "auc": _RATE_OR_NULL,
        "positive_rate": _RATE_OR_NULL,
        "predicted_positive_rate": _RATE_OR_NULL,
        "majority_baseline": _RATE_OR_NULL,
        "threshold": _NUM,
        "confusion": {
            "type": "array",
            "minItems": 2,
            "maxItems": 2,
            "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 0}},
        },
        "error_pos": _RATE_OR_NULL,
        "error_neg": _RATE_OR_NULL,
        "n_pos": {"type": "integer", "minimum": 0},
        "n_neg": {"type": "integer", "minimum": 0},
    },
}

_OVERALL_PROPS: dict[str, Any] = {
    "n_images": {"type": "integer", "minimum": 0},
    "mean_accuracy": _RATE_OR_NULL,
    "mean_balanced_accuracy": _RATE_OR_NULL,
    "mean_f1": _RATE_OR_NULL,
    "mean_precision": _RATE_OR_NULL,
    "mean_recall": _RATE_OR_NULL,
    "mean_auc": _RATE_OR_NULL,
    "exact_match": _RATE_OR_NULL,
    "hamming_loss": _RATE_OR_NULL,
}
_OVERALL_KEYS = list(_OVERALL_PROPS)

BLOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [*_OVERALL_KEYS, "per_attribute"],
    "properties": {**_OVERALL_PROPS, "per_attribute": {"type": "object", "additionalProperties": PER_ATTRIBUTE_SCHEMA}},
}

_GAP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [k for k in _OVERALL_KEYS if k != "n_images"] + ["per_attribute"],
    "properties": {
        **{k: _GAP for k in _OVERALL_KEYS if k != "n_images"},
        "per_attribute": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": _GAP}},
    },
}

_SUBGROUPS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "required": ["0", "1", "gap"],
        "properties": {"0": BLOCK_SCHEMA, "1": BLOCK_SCHEMA, "gap": _GAP_SCHEMA},
    },
}

EVAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "faceattr evaluation",
    "type": "object",
    "required": [
        "schema_version", "model", "checkpoint", "architecture", "output", "data_root", "split",
        "attributes", *_OVERALL_KEYS, "per_attribute", "subgroups", "calibration", "calibrated", "warnings",
        "device", "images_per_s", "created",
    ],
    "properties": {
        **_OVERALL_PROPS,
        "schema_version": {"const": 1},
        "model": {"type": "string"},
        "checkpoint": {"type": "string"},
        "architecture": {"type": "string"},
        "output": {"enum": ["sigmoid", "softmax"]},
        "data_root": {"type": "string"},
        "split": {"type": "string"},
        "limit": {"type": "integer", "minimum": 0},
        "holdout_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "seed": {"type": "integer"},
        "flip": {"type": "boolean"},
        "grayscale": {"type": "boolean"},
        "swap_clothes": {"type": "boolean"},
        "n_swapped": {"type": "integer", "minimum": 0},
        "n_images": {"type": "integer", "minimum": 1},
        "n_skipped": {"type": "integer", "minimum": 0},
        "attributes": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "subgroup_attributes": {"type": "array", "items": {"type": "string"}},
        "per_attribute": {"type": "object", "additionalProperties": PER_ATTRIBUTE_SCHEMA},
        "subgroups": _SUBGROUPS_SCHEMA,
        "calibration": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["source", "objective", "split", "thresholds", "saved", "same_split_as_evaluation", "warning"],
                    "properties": {
                        "source": {"enum": ["this evaluation", "checkpoint"]},
                        "objective": {"enum": ["accuracy", "balanced_accuracy", "mixed", None]},
                        "balanced_weight": {"type": ["number", "null"], "minimum": 0},
                        "split": {"type": ["string", "null"]},
                        "thresholds": {"type": "object", "additionalProperties": _NUM},
                        "cross_validated_gain": {"type": ["number", "null"]},
                        "saved": {"type": "boolean"},
                        "same_split_as_evaluation": {"type": "boolean"},
                        "warning": {"type": ["string", "null"]},
                    },
                },
            ]
        },
        "calibrated": {
            "oneOf": [
                {"type": "null"},
                {
                    "allOf": [BLOCK_SCHEMA, {"type": "object", "required": ["subgroups"], "properties": {"subgroups": _SUBGROUPS_SCHEMA}}],
                },
            ]
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
        "device": {"type": "string"},
        "images_per_s": {"type": "number", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
        "created": {"type": "string"},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
