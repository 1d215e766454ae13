"""The model: a deep autoencoder with a binary code layer, its training, and nothing else.

It takes arrays and gives arrays; it knows nothing of files, folders or collections.
``config`` (what rebuilds the network, how it is trained), ``network`` (the stages),
``binarizers/`` (one file per way of making the code binary), ``losses``, ``augment``,
``neighbours``, ``pretrain``, ``finetune``, ``train`` (the loop), ``plan`` (what a fit will cost, for
its progress bar), ``inputs`` (array -> batches),
``hasher`` (Hasher: fit / encode / decode), ``state`` (ModelState: a trained model as plain data).
"""
from __future__ import annotations

from ..lazy import lazy_attributes

# imported lazily: the CLI reads configs (``model.config``, numpy only) without loading torch
_EXPORTS = {"HasherConfig": ".config", "ModelConfig": ".config", "TrainConfig": ".config",
            "Hasher": ".hasher", "ModelState": ".state"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, _EXPORTS)
