"""The model: a deep autoencoder with a binary code layer, its training, and nothing else.

It takes arrays and gives arrays; it knows nothing of files, folders or collections.
``config`` (what rebuilds the network, how it is trained), ``network`` (the stages),
``binarizers/`` (one file per way of making the code binary), ``losses``, ``augment``,
``neighbours``, ``pretrain``, ``finetune``, ``train`` (the loop), ``plan`` (what a fit will cost, for
its progress bar), ``inputs`` (array -> batches),
``hasher`` (Hasher: fit / encode / decode, and ModelState).
"""
from .config import HasherConfig, ModelConfig, TrainConfig
from .hasher import Hasher, ModelState

__all__ = ["Hasher", "HasherConfig", "ModelConfig", "ModelState", "TrainConfig"]
