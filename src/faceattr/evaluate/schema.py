"""The evaluation JSON (``faceattr evaluate --json``, ``eval.json`` in sweep runs): format and JSON Schema.

Schema version 1. Keys are stable; new keys may be added, none are renamed or removed without a
version bump. Rates are fractions in [0, 1]; ``null`` means "undefined on this data" (for example
ROC AUC when the split holds one class only, or a subgroup with no images).

Two forms, told apart by ``dataset``: CelebA (``"celeba"``, or no ``dataset`` key in documents
written before it existed) and UTKFace (``"utkface"``, further below). The CelebA form::

    {
      "schema_version": 1,
      "dataset": "celeba",           # absent in older documents
      "predicts_age": bool,          # the model has an age output (not scored here: CelebA has no ages)
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
      "calibrated": null | {overall block, "per_attribute": {...}, "subgroups": {...},
                            "lipstick_shortcut": {...} | null},   # at the calibrated Male threshold

      # The model card's shortcut check, at threshold 0.5; null unless Male is among the evaluated
      # attributes and the data labels Wearing_Lipstick. Among women (Male = 0): how many are called Male.
      "lipstick_shortcut": null | {
          "threshold": float,
          "without_lipstick": {"n": int, "called_male": int, "rate": float | null},
          "with_lipstick": {"n": int, "called_male": int, "rate": float | null},
          "gap": float | null},      # rate without - rate with (> 0: lipstick-less women look male to it)

      "warnings": [str, ...],        # e.g. evaluating on training images, calibrating on the test split
      "device": str, "images_per_s": float, "seconds": float, "created": str,
      "backend": "onnx" | "torch",   # what ran the model (--backend; absent in older documents)
      "versions": {"faceattr": str, "torch": str, "torchvision": str}
    }

The UTKFace form (`faceattr.evaluate.utk`: gender and age through detection and alignment, as
``faceattr predict`` sees photos)::

    {
      "schema_version": 1, "dataset": "utkface",
      "model", "checkpoint", "architecture", "output", "data_root", "split": str, "limit", "seed": int,
      "pipeline": str,               # how faces were found: detect + align, largest face per image
      "n_images": int,               # images of the split (sample) ...
      "n_detected": int,             # ... with a usable face: the metrics cover these ...
      "n_missed": int,               # ... and these had none (n_detected + n_missed = n_images)
      "missed": {"no_face": int, "too_small": int, "unreadable": int},
      "missed_examples": [str, ...], # up to 20 missed file names
      "n_multiple_faces": int,       # images with more than one face (the largest was scored)
      "predicts_age": bool,          # false: every age_mae / age_bias below is null
      "male_threshold": float,       # called male when P(Male) >= this (the model's own threshold)
      "races": [str, ...], "age_bands": [str, ...],   # the slice names, in order
      "groups": {
          "threshold": float, "min_n": int,
          "overall": slice,
          "gender": {"female": slice, "male": slice},
          "race": {RACE: slice},     # race is a label of the data, used only to slice
          "age_band": {BAND: slice},
          "cells": [{"gender": str, "race": str, "age_band": str, **slice}, ...],  # non-empty cells only
          "headline": {"adults": slice, "adult_women": slice, "adult_men": slice,  # adults: age >= 15
                       "adult_race": {RACE: slice}, "age_70_plus": slice, "under_15": slice},
          "worst_group": null | {"slice": "gender" | "race" | "age_band" | "cell", "group": str,
                                 "gender_accuracy": float, "n": int}},  # lowest accuracy, n >= min_n
      "warnings": [str, ...], "device": str, "backend": "onnx" | "torch", "images_per_s": float,
      "seconds": float, "created": str, "versions": {...}
    }

    slice = {"n_images": int, "n_missed": int,      # images in the slice, and those with no face
             "n": int, "n_female": int, "n_male": int, "n_correct": int,   # detected faces
             "gender_accuracy": float | null, "gender_balanced_accuracy": float | null,
             "age_mae": float | null,               # mean absolute error, years
             "age_bias": float | null}              # mean (predicted - true), years

`EVAL_SCHEMA` is the same as a JSON Schema (draft 2020-12) for validators; `CELEBA_SCHEMA` and
`UTKFACE_SCHEMA` are its two forms.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BLOCK_SCHEMA", "CELEBA_SCHEMA", "EVAL_SCHEMA", "PER_ATTRIBUTE_SCHEMA", "SLICE_SCHEMA", "UTKFACE_SCHEMA"]

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

_COUNT = {"type": "integer", "minimum": 0}
_LIPSTICK_PART = {
    "type": "object",
    "required": ["n", "called_male", "rate"],
    "properties": {"n": _COUNT, "called_male": _COUNT, "rate": _RATE_OR_NULL},
}
_LIPSTICK_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "null"},
        {
            "type": "object",
            "required": ["threshold", "without_lipstick", "with_lipstick", "gap"],
            "properties": {"threshold": _NUM, "without_lipstick": _LIPSTICK_PART, "with_lipstick": _LIPSTICK_PART,
                           "gap": _GAP},
        },
    ]
}

# What every evaluation JSON records about its run, whatever the data.
_RUN_PROPS: dict[str, Any] = {
    "model": {"type": "string"},
    "checkpoint": {"type": "string"},
    "architecture": {"type": "string"},
    "output": {"enum": ["sigmoid", "softmax"]},
    "data_root": {"type": "string"},
    "warnings": {"type": "array", "items": {"type": "string"}},
    "device": {"type": "string"},
    "backend": {"enum": ["onnx", "torch"]},  # absent in documents written before it existed
    "images_per_s": {"type": "number", "minimum": 0},
    "seconds": {"type": "number", "minimum": 0},
    "created": {"type": "string"},
    "versions": {"type": "object", "additionalProperties": {"type": "string"}},
}

CELEBA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema_version", "model", "checkpoint", "architecture", "output", "data_root", "split",
        "attributes", *_OVERALL_KEYS, "per_attribute", "subgroups", "calibration", "calibrated", "warnings",
        "device", "images_per_s", "created",
    ],
    "properties": {
        **_RUN_PROPS,
        **_OVERALL_PROPS,
        "schema_version": {"const": 1},
        "dataset": {"const": "celeba"},
        "predicts_age": {"type": "boolean"},
        "lipstick_shortcut": _LIPSTICK_SCHEMA,
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
                    "allOf": [BLOCK_SCHEMA, {"type": "object", "required": ["subgroups"], "properties": {
                        "subgroups": _SUBGROUPS_SCHEMA, "lipstick_shortcut": _LIPSTICK_SCHEMA}}],
                },
            ]
        },
    },
}

_MEAN_OR_NULL = {"type": ["number", "null"]}
SLICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["n_images", "n_missed", "n", "n_female", "n_male", "n_correct", "gender_accuracy",
                 "gender_balanced_accuracy", "age_mae", "age_bias"],
    "properties": {
        "n_images": _COUNT, "n_missed": _COUNT, "n": _COUNT, "n_female": _COUNT, "n_male": _COUNT,
        "n_correct": _COUNT,
        "gender_accuracy": _RATE_OR_NULL,
        "gender_balanced_accuracy": _RATE_OR_NULL,
        "age_mae": {"type": ["number", "null"], "minimum": 0},
        "age_bias": _MEAN_OR_NULL,
    },
}
_SLICES = {"type": "object", "additionalProperties": SLICE_SCHEMA}
_CELL_SCHEMA: dict[str, Any] = {
    "allOf": [
        SLICE_SCHEMA,
        {"type": "object", "required": ["gender", "race", "age_band"],
         "properties": {"gender": {"enum": ["female", "male"]}, "race": {"type": "string"},
                        "age_band": {"type": "string"}}},
    ]
}
_GROUPS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["threshold", "min_n", "overall", "gender", "race", "age_band", "cells", "headline", "worst_group"],
    "properties": {
        "threshold": _NUM,
        "min_n": {"type": "integer", "minimum": 1},
        "overall": SLICE_SCHEMA,
        "gender": {"type": "object", "required": ["female", "male"], "properties": {"female": SLICE_SCHEMA, "male": SLICE_SCHEMA}},
        "race": _SLICES,
        "age_band": _SLICES,
        "cells": {"type": "array", "items": _CELL_SCHEMA},
        "headline": {
            "type": "object",
            "required": ["adults", "adult_women", "adult_men", "adult_race", "age_70_plus", "under_15"],
            "properties": {"adults": SLICE_SCHEMA, "adult_women": SLICE_SCHEMA, "adult_men": SLICE_SCHEMA,
                           "adult_race": _SLICES, "age_70_plus": SLICE_SCHEMA, "under_15": SLICE_SCHEMA},
        },
        "worst_group": {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "required": ["slice", "group", "gender_accuracy", "n"],
                 "properties": {"slice": {"enum": ["gender", "race", "age_band", "cell"]}, "group": {"type": "string"},
                                "gender_accuracy": _RATE, "n": _COUNT}},
            ]
        },
    },
}

UTKFACE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "schema_version", "dataset", "model", "checkpoint", "architecture", "data_root", "split", "seed",
        "n_images", "n_detected", "n_missed", "missed", "predicts_age", "male_threshold", "groups", "warnings",
        "device", "images_per_s", "created",
    ],
    "properties": {
        **_RUN_PROPS,
        "schema_version": {"const": 1},
        "dataset": {"const": "utkface"},
        "split": {"enum": ["train", "valid", "test", "all"]},
        "limit": _COUNT,
        "seed": {"type": "integer"},
        "pipeline": {"type": "string"},
        "n_images": {"type": "integer", "minimum": 1},
        "n_detected": {"type": "integer", "minimum": 1},
        "n_missed": _COUNT,
        "missed": {"type": "object", "required": ["no_face", "too_small", "unreadable"],
                   "additionalProperties": _COUNT},
        "missed_examples": {"type": "array", "items": {"type": "string"}},
        "n_multiple_faces": _COUNT,
        "predicts_age": {"type": "boolean"},
        "male_threshold": _NUM,
        "races": {"type": "array", "items": {"type": "string"}},
        "age_bands": {"type": "array", "items": {"type": "string"}},
        "groups": _GROUPS_SCHEMA,
    },
}

EVAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "faceattr evaluation",
    "type": "object",
    # Documents without "dataset" predate it and are CelebA evaluations.
    "if": {"type": "object", "required": ["dataset"], "properties": {"dataset": {"const": "utkface"}}},
    "then": UTKFACE_SCHEMA,
    "else": CELEBA_SCHEMA,
}
