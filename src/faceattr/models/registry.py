"""A small strict model registry: one builder per name, each carrying its input size and normalisation."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from faceattr.errors import FaceattrError, resolve_names
from faceattr.models.net import AttributeNet

__all__ = ["ENSEMBLE", "ModelSpec", "Builder", "register_model", "list_models", "get_spec", "create_model"]

logger = logging.getLogger(__name__)

Builder = Callable[..., AttributeNet]

# The model name checkpoints use for faceattr.models.ensemble.EnsembleNet; no builder may take it.
ENSEMBLE = "ensemble"

# Every builder takes exactly these, keyword-only, so create_model never forwards a stray option.
_BUILDER_PARAMS = ("num_outputs", "pretrained", "hidden", "dropout")


@dataclass(frozen=True)
class ModelSpec:
    """What a registry entry needs from its input: size (height, width), normalisation, weights tag."""

    name: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained_tag: str | None
    description: str


_REGISTRY: dict[str, tuple[ModelSpec, Builder]] = {}


def _check_builder(name: str, fn: Builder) -> None:
    """Raise TypeError unless `fn` takes exactly the builder keywords, keyword-only, without **kwargs."""
    params = inspect.signature(fn).parameters.values()
    kinds = {p.kind for p in params}
    names = tuple(p.name for p in params)
    if (
        inspect.Parameter.VAR_KEYWORD in kinds
        or inspect.Parameter.VAR_POSITIONAL in kinds
        or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params)
        or sorted(names) != sorted(_BUILDER_PARAMS)
    ):
        raise TypeError(
            f"builder for '{name}' must take exactly the keyword-only arguments "
            f"{', '.join(_BUILDER_PARAMS)} (no **kwargs), got ({', '.join(names)})"
        )


def register_model(
    name: str,
    *,
    input_size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    pretrained_tag: str | None = None,
    description: str = "",
) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under `name`; a duplicate name raises ValueError."""
    if not name or name != name.strip():
        raise ValueError(f"invalid model name {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is already registered")
    if name == ENSEMBLE:
        raise ValueError(f"model name '{ENSEMBLE}' is reserved for checkpoint ensembles")
    if len(input_size) != 2 or any(int(s) <= 0 for s in input_size):
        raise ValueError(f"input_size must be (height, width) > 0, got {input_size!r}")
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise ValueError(f"mean and std need 3 values each with std > 0, got {mean!r}, {std!r}")
    spec = ModelSpec(
        name=name,
        input_size=(int(input_size[0]), int(input_size[1])),
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        pretrained_tag=pretrained_tag,
        description=description,
    )

    def decorator(fn: Builder) -> Builder:
        _check_builder(name, fn)
        # Checked again: two decorators made before either was applied must not both land.
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered")
        _REGISTRY[name] = (spec, fn)
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of model `name` (case-insensitive); FaceattrError with a did-you-mean when unknown."""
    (canonical,) = resolve_names([name], list_models(), what="model")
    return _REGISTRY[canonical][0]


def _check_int(what: str, value: object, minimum: int) -> None:
    """Raise FaceattrError unless `value` is an int >= minimum (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FaceattrError(f"{what} must be an integer >= {minimum}, got {value!r}")


def create_model(
    name: str, *, num_outputs: int, pretrained: bool = False, hidden: int = 0, dropout: float = 0.0
) -> AttributeNet:
    """Build registered model `name` with `num_outputs` logits, optionally from pretrained weights."""
    spec = get_spec(name)
    _check_int("num_outputs", num_outputs, 1)
    _check_int("hidden", hidden, 0)
    if not 0.0 <= float(dropout) < 1.0:
        raise FaceattrError(f"dropout must be in [0, 1), got {dropout!r}")
    if pretrained and spec.pretrained_tag is None:
        with_weights = [n for n in list_models() if _REGISTRY[n][0].pretrained_tag is not None]
        raise FaceattrError(
            f"model '{spec.name}' has no pretrained weights; use pretrained=False "
            f"or one of: {', '.join(with_weights)}"
        )
    builder = _REGISTRY[spec.name][1]
    model = builder(num_outputs=num_outputs, pretrained=bool(pretrained), hidden=hidden, dropout=float(dropout))
    logger.debug(
        "built %s (num_outputs=%d, pretrained=%s, hidden=%d, dropout=%.3g)",
        spec.name, num_outputs, pretrained, hidden, dropout,
    )
    return model
