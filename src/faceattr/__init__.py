"""faceattr: facial attribute prediction, from CelebA loading to a served web page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from faceattr.infer import AttributeModel


def load(name_or_path: str = "default", **kwargs: Any) -> "AttributeModel":
    """Load a shipped model by name or a checkpoint by path; see `faceattr.infer.load`."""
    # Imported lazily so `import faceattr` stays cheap and free of side effects.
    from faceattr.infer import load as _load

    return _load(name_or_path, **kwargs)
