"""Binarizers: how the code layer is made binary while training; one module per method.

A binarizer turns code-layer inputs z into what the decoder sees during fine-tuning; encoding
always stores z > 0. Each module here named ``<name>.py`` defines ``Binarizer``, built as
``Binarizer(training_config)`` and called as ``binarizer(z, ramp)`` with ``ramp`` rising from 0
to 1 over the first ``noise_anneal`` of fine-tuning. A new method is one new file; its file
name is the value of ``TrainConfig.binarizer`` that selects it.
"""
from __future__ import annotations

import importlib
import pkgutil


def names() -> tuple:
    """Every available binarizer, by file name (no module is imported)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))


def get(name: str):
    """The ``Binarizer`` class of ``name`` (one of names())."""
    if name not in names():
        raise ValueError(f"binarizer must be one of {', '.join(map(repr, names()))}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}").Binarizer
