"""Model registry: `create_model(name, num_outputs=...)` returns an AttributeNet that outputs logits.

Every entry carries its default input size and normalisation (`get_spec`). Importing this package
only registers builders; no weights are loaded or downloaded until `create_model(..., pretrained=True)`.
"""

from __future__ import annotations

# Imported for their side effect of registering entries (a dict insert, nothing else).
from faceattr.models import custom, efficientnet, torchvision_backbones  # noqa: F401
from faceattr.models.net import AttributeNet, count_parameters, param_groups, set_trainable
from faceattr.models.registry import ModelSpec, create_model, get_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "register_model",
    "list_models",
    "get_spec",
    "create_model",
    "AttributeNet",
    "set_trainable",
    "param_groups",
    "count_parameters",
]
