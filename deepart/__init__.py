"""deepart: multi-attribute fine-art recognition (style, genre, artist), a Hydra-configured experiment repo.

Python API (imported on first use, so `import deepart` stays light):
    Predictor     a trained model ready for images (deepart.inference)
    load_model    the model of a checkpoint, a run dir or an export folder, and its checkpoint (deepart.inference)
    load_pretrained  the model of an export folder (python -m deepart.export) alone (deepart.inference)
    DeepArtNet    the model (deepart.models)
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Predictor": "deepart.inference", "load_model": "deepart.inference",
            "load_pretrained": "deepart.inference", "DeepArtNet": "deepart.models"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepart' has no attribute {name!r}")
