"""SemanticHasher: the model (model.Hasher: fit / encode / decode) that can also save itself to
an HDF5 file or group and load itself back (storage/layout.py: plain float datasets and JSON,
no pickle). It sits above both packages so that neither knows the other."""
from __future__ import annotations

import os

from .model.hasher import Hasher
from .storage import layout


class SemanticHasher(Hasher):
    """Deep autoencoder with a noise-forced binary bottleneck.

    ``SemanticHasher(bits=32).fit(images).encode(images)`` -> (n, 4) uint8 codes;
    ``.save(path)`` and ``SemanticHasher.load(path)`` keep it in HDF5. Images are arrays
    (n, C, S, S), (n, S, S, C) or, for one channel, (n, S, S); uint8 in [0, 255] or float in
    [0, 1], with S = ``image_size`` and C = ``channels``.
    """

    def save(self, target, overwrite: bool = True) -> None:
        """Write config, training record and weights to an HDF5 file path or an open h5py group."""
        state = self.state()
        if isinstance(target, (str, os.PathLike)):
            layout.save_model_file(target, state)
            return
        if layout.WEIGHTS in target:
            if not overwrite:
                raise FileExistsError(f"{target.name} already holds a model")
            del target[layout.WEIGHTS]
        layout.write_model(target, state)

    @classmethod
    def load(cls, source) -> "SemanticHasher":
        """Rebuild a model from a file path or h5py group written by ``save``; every dataset is
        checked against the shapes the stored config implies before any is read (ValueError)."""
        if isinstance(source, (str, os.PathLike)):
            return cls.from_state(layout.load_model_file(source))
        return cls.from_state(layout.read_model(source))
