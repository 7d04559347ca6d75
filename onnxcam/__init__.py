"""onnxcam, the installed name: `onnxcam.runtime` (explain images, onnxruntime only) and
`onnxcam.export` (write the model). The repository keeps the two halves at its top level
(`runtime/`, `export/`); pyproject.toml installs them under this package (docs/packaging.md).

    from onnxcam import Explainer, Targets

The names below load on first use, so `import onnxcam` costs nothing until one is asked for.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# In a clone the two halves sit beside this folder, not in it: look for them there too, so that
# `import onnxcam` also works from a checkout that was never installed.
_HERE = os.path.dirname(os.path.abspath(__file__))
if not os.path.isdir(os.path.join(_HERE, "runtime")):
    __path__.append(os.path.dirname(_HERE))  # noqa: F821 (a package's __path__)

_FROM_RUNTIME = (
    "Explainer", "Explanation", "ClassMap", "Prediction", "Outcome", "ModelCard", "METHODS",
    "Targets", "ImageError", "ModelError", "OnnxcamError", "UsageError",
)

__all__ = sorted(_FROM_RUNTIME)


def __getattr__(name: str) -> Any:
    if name not in _FROM_RUNTIME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".runtime", __name__), name)
    globals()[name] = value
    return value
