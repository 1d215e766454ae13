"""Hasher: the scikit-learn-like face of the model (numpy in, packed uint8 codes out); it
becomes and is rebuilt from a ModelState (model/state.py), which storage writes and reads.

Nothing here knows about files: ``hashae.SemanticHasher`` adds HDF5 save/load on top.
"""
from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .. import codes as codes_mod
from ..progress import PhasedProgress
from . import losses, parallel
from .config import HasherConfig
from .augment import random_views
from .finetune import FineTune
from .inputs import as_input, for_data
from .neighbours import Gate, flat, gradient_histograms, nearest_neighbours
from .network import BATCH_ACTIVATIONS, HashNet, check_budget
from .plan import finetune_epochs, fit_plan
from .pretrain import pretrain_stages
from .state import ModelState
from .statistics import STORED_WIDTH, grid_stats, stored_stats
from .train import History, Phase, fit_loop, mean_over, ready, training_dtype


# the descriptor parts of each config.NEIGHBOUR_SPACES entry (images)
NEIGHBOUR_PARTS = {"pixels": (flat,), "pixels+stats": (flat, grid_stats),
                   "pixels+stats+gradients": (flat, grid_stats, gradient_histograms)}

# the linear twin (HashNet.residual) is fitted on at most this many training images, drawn
# with the seed plus TWIN_SEED: 32 directions of 1,024 or 3,072 pixels are settled by far fewer
TWIN_SAMPLE, TWIN_SEED, TWIN_IMAGES = 4096, 3, 8


def twin_dims(cfg: HasherConfig, n: int) -> int:
    """Directions of the linear twin for ``n`` training images: ``residual_dims``, or when None
    RESIDUAL_DIMS, at most one per TWIN_IMAGES images (more would span the images themselves,
    and an odd one would be rebuilt as well as the rest)."""
    if cfg.residual_dims is not None:
        return cfg.residual_dims
    return min(cfg.residual_count, n // TWIN_IMAGES)


@dataclass
class Encoded:
    """What an index run stores of each image from one pass through the model: packed codes
    (n, bits // 8), reconstruction errors (n,), channel statistics (n, 13) of the model's
    input (statistics.stored_stats; None for a vector model) and the linear twin's residuals
    (n,) (HashNet.residual; None for a model without one). Outlier scores read them all."""

    codes: np.ndarray
    error: np.ndarray
    stats: np.ndarray | None = None
    residual: np.ndarray | None = None


@dataclass
class Split:
    """Rows of the training array that train the model and that judge it (early stopping)."""

    train: np.ndarray
    val: np.ndarray


class Hasher:
    """Deep autoencoder with a noise-forced binary bottleneck.

    ``Hasher(bits=32).fit(images).encode(images)`` -> (n, 4) uint8 codes. Images are arrays
    (n, C, S, S), (n, S, S, C) or, for one channel, (n, S, S); uint8 in [0, 255] or float in
    [0, 1], with S = ``image_size`` and C = ``channels``. A 2-D array (n, d) of vectors makes a
    vector model (``kind='vector'``, model/inputs.py) that then takes only such vectors.
    """

    def __init__(self, config: HasherConfig | None = None, **overrides):
        cfg = config if config is not None else HasherConfig()
        self.config = cfg.replace(**overrides) if overrides else HasherConfig(**cfg.__dict__).validate()
        # images per inference batch at most, so that a batch's activations stay bounded (a
        # vector model without its width yet gets it, and its budget, when fitted)
        unsized = self.config.is_vector and not self.config.dim
        self._batch_cap = 1 if unsized else max(1, BATCH_ACTIVATIONS // check_budget(self.config.model).activations)
        self.net: HashNet | None = None
        self.history_ = History()
        self.fit_seconds_: float | None = None

    # ------------------------------------------------------------------ training
    def fit(self, images, progress: bool | None = None) -> "Hasher":
        """Pretrain (unless ``pretrain='none'``) and fine-tune on ``images``; returns self.

        If the codes collapse (``collapsed``) and the statistics term was on, the model is
        trained again without it, with a warning, and ``config`` says so: on binaryalphadigits
        (binary glyphs, whose sharp edges a reconstruction through 64 bits cannot match) that
        term drove every code layer unit to saturation and all 1,190 images to one code; on the
        other five shared sets it never triggers (bench/README.md, "k-NN labels")."""
        self.config = for_data(self.config, images)
        # stored as numbers
        row_error = (self.config.row_error is not False) if self.config.is_vector else None
        self.config = self.config.replace(feature_bits=self.config.feature_count,
                                          residual_dims=twin_dims(self.config, len(images)), row_error=row_error)
        self._batch_cap = max(1, BATCH_ACTIVATIONS // check_budget(self.config.model).activations)
        data = as_input(images, self.config.model)
        if len(data) < 2:
            raise ValueError(f"fit needs at least 2 images, got {len(data)}")
        t0 = time.monotonic()
        sample, pictures = self._fit_once(data, progress)
        if self.config.stats_weight > 0 and collapsed(sample, pictures):
            distinct = len(torch.unique(sample, dim=0))
            warnings.warn(f"training collapsed ({pictures} distinct training images got {distinct} distinct codes); "
                          "training again without the statistics term (stats=0)", stacklevel=2)
            self.config = self.config.replace(stats=0.0)
            self._fit_once(data, progress)
        self.fit_seconds_ = time.monotonic() - t0
        return self

    def _fit_once(self, data, progress) -> tuple[torch.Tensor, int]:
        """One training run with ``config``; returns the codes (n, bits) bool of up to 2,048
        training images and how many of those images differ (exact copies count once)."""
        cfg = self.config
        _set_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        split = _split(len(data), cfg, rng)

        net = HashNet(cfg.model)
        rows = np.sort(split.train)
        if cfg.is_vector:
            mean, scale = data.moments(rows)
            net.mean.copy_(mean), net.scale.copy_(scale)
            if cfg.pca_dims:
                directions, spread = data.principal_directions(rows, mean, scale, cfg.pca_dims, cfg.seed)
                net.components.copy_(directions), net.spread.fill_(spread)
        else:
            net.mean.copy_(data.mean(rows))
            if cfg.residual_count:
                sample = rows
                if len(rows) > TWIN_SAMPLE:  # its own draws: the fit's generator stays as it was
                    sample = np.sort(np.random.default_rng(cfg.seed + TWIN_SEED).permutation(rows)[:TWIN_SAMPLE])
                net.twin.copy_(data.principal_directions(sample, net.mean, cfg.residual_count, cfg.seed))
            if net.features is not None:
                net.features.fit(data.batch, rows, cfg.seed, cfg.noise_std, cfg.crop_min)
        rank = parallel.world()[0]
        if rank:  # the same initial weights everywhere, other augmentations on each process
            torch.manual_seed(cfg.seed + rank)
        self.net, self.history_ = net, History()
        # one bar for the whole fit (pretraining stages and fine-tuning), its ETA from the plan
        plan = fit_plan(cfg, len(split.train), len(split.val))
        ready()  # torch's one-time optimiser import, outside the bar's clock
        with (PhasedProgress(plan, "fit", enabled=False if rank else progress) as bar,
              net.wide_products(training_dtype(cfg.precision)) as dtype):
            # a record of what the wide layers' products ran in: the same seed gives the same
            # codes on one kind of CPU, and bfloat16 on one against float32 on another round differently
            self.config = cfg.replace(extra={**cfg.extra, "trained_in": str(dtype).removeprefix("torch.")})
            return self._train(net, data, split, rng, bar)

    def _train(self, net: HashNet, data, split: Split, rng: np.random.Generator, bar) -> tuple[torch.Tensor, int]:
        """Pretrain and fine-tune ``net`` on ``split``; returns the codes (n, bits) bool of up
        to 2,048 training images and the number of distinct images among them."""
        cfg = self.config
        if cfg.pretrain == "dae" and cfg.pretrain_epochs > 0:
            pretrain_stages(net, data, split, cfg.training, rng, self.history_, bar)

        def recon_loss(i):  # what encode/decode will do: reconstruction through hard bits
            x = data.batch(i)
            return losses.reconstruction(net(x).recon, net.target(x))

        neighbours = None
        if cfg.neighbour_weight > 0:  # positions into train_sorted of each image's neighbours
            train_sorted = np.sort(split.train)
            # vectors: neighbours as the network sees them (standardised), which is what ranks
            # documents and embeddings by topic; images: pixels in [0, 1]
            batch = (lambda i: net.target(data.batch(i))) if cfg.is_vector else data.batch
            parts = NEIGHBOUR_PARTS[cfg.neighbour_space] if not cfg.is_vector else (flat,)
            gate = None
            if cfg.neighbour_gate > 0 or cfg.neighbour_shared:  # a vector's gate ratio is 0 (validate)
                gate = Gate(cfg.neighbour_gate, lambda x: random_views(x, cfg.crop_min), cfg.neighbour_shared)
            found = nearest_neighbours(batch, train_sorted, cfg.neighbour_count, cfg.seed, parts, gate)
            if found.table.shape[1]:
                neighbours = found
        phase = Phase(name="fine-tune", params=net.parameters(), batch_loss=FineTune(net, data, cfg, neighbours),
                      val_loss=(lambda: mean_over(split.val, cfg.batch_size * 4, recon_loss)) if len(split.val) else None,
                      rows=split.train, epochs=finetune_epochs(cfg, len(split.train)),
                      patience=cfg.patience, watch_from=cfg.noise_anneal)
        fit_loop(net, phase, cfg.training, rng, self.history_, bar)
        sample = np.sort(split.train[:2048])
        codes, pictures = [], set()
        with torch.inference_mode():
            for s in range(0, len(sample), 256):
                x = data.batch(sample[s:s + 256])
                codes.append(net.logits(x) > 0)
                pictures.update(hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in x)
        return torch.cat(codes), len(pictures)

    # ------------------------------------------------------------------ inference
    def _require_fit(self) -> HashNet:
        if self.net is None:
            raise RuntimeError("this model is not fitted: call .fit(images) or SemanticHasher.load(path)")
        return self.net

    def logits(self, images, batch_size: int = 1024) -> np.ndarray:
        """Code-layer inputs z, (n, bits) float32; the code is z > 0."""
        net = self._require_fit()
        data = as_input(images, self.config.model)
        batch_size = min(batch_size, self._batch_cap)
        out = np.empty((len(data), self.config.bits), np.float32)
        with torch.inference_mode():
            for s in range(0, len(data), batch_size):
                i = np.arange(s, min(s + batch_size, len(data)))
                out[i] = net.code_logits(data.batch(i)).numpy()
        return out

    def statistics(self, images, batch_size: int = 1024) -> np.ndarray:
        """Channel statistics of images as a collection stores them per item (statistics.
        stored_stats of the model's input), (n, STORED_WIDTH) float32: what the two-stage
        ranking compares a query's with."""
        if self.config.is_vector:
            raise ValueError("a vector model has no channel statistics")
        data = as_input(images, self.config.model)
        out = np.empty((len(data), STORED_WIDTH), np.float32)
        for s in range(0, len(data), batch_size):
            i = np.arange(s, min(s + batch_size, len(data)))
            out[i] = stored_stats(data.batch(i))
        return out

    def encode(self, images, batch_size: int = 1024) -> np.ndarray:
        """Packed codes (n, bits // 8) uint8 in FAISS bit order."""
        return codes_mod.pack(self.logits(images, batch_size) > 0)

    def encode_with_error(self, images, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Packed codes and each image's reconstruction error through its code (mean squared
        error in [0, 1] pixels; for vectors, per value of the scaled row), from one pass."""
        out = self.encode_for_index(images, batch_size, stats=False)
        return out.codes, out.error

    def encode_for_index(self, images, batch_size: int = 1024, stats: bool = True) -> Encoded:
        """Codes, reconstruction errors and (images; ``stats``) channel statistics and the
        linear twin's residuals from one pass: what an index run stores of each item (outlier
        scores). Without ``stats``, codes and errors only."""
        net = self._require_fit()
        data = as_input(images, self.config.model)
        batch_size = min(batch_size, self._batch_cap)
        bits = np.empty((len(data), self.config.bits), bool)
        error = np.empty(len(data), np.float32)
        residual = np.empty(len(data), np.float32) if self.config.residual_count and stats else None
        stats = None if self.config.is_vector or not stats else np.empty((len(data), STORED_WIDTH), np.float32)
        with torch.inference_mode():
            for s in range(0, len(data), batch_size):
                i = np.arange(s, min(s + batch_size, len(data)))
                x = data.batch(i)
                out, err = net.measured(x)
                bits[i] = (net.code_logits(x, out.logits) > 0).numpy()
                error[i] = err.numpy()
                if stats is not None:
                    stats[i] = stored_stats(x)
                if residual is not None:
                    residual[i] = net.residual(x).numpy()
        return Encoded(codes_mod.pack(bits), error, stats, residual)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructions of packed codes from their learnt bits: images (n, C, S, S) float32
        in [0, 1], or vectors as HashNet.target gives them (standardised, or their principal
        components)."""
        net = self._require_fit()
        bits = codes_mod.unpack(codes_mod.as_codes(codes, self.config.bits // 8))[:, :self.config.learnt_bits]
        with torch.inference_mode():
            return net.decode(torch.from_numpy(bits.astype(np.float32))).numpy()

    def reconstruction_error(self, images, batch_size: int = 1024) -> np.ndarray:
        """Per-image mean squared error of reconstructing through the binary code."""
        return self.encode_with_error(images, batch_size)[1]

    # ------------------------------------------------------------------ state
    def state(self) -> ModelState:
        """The fitted model as plain data (what storage writes)."""
        net = self._require_fit()
        weights = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}
        return ModelState(self.config.model, self.config.training, weights)

    @classmethod
    def from_state(cls, state: ModelState) -> "Hasher":
        """Rebuild a fitted model; the weights must match the network the config builds (a
        reader checks them before reading, see storage/layout.py)."""
        model = cls(HasherConfig.from_parts(state.model, state.training))
        net = HashNet(model.config.model)
        net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.weights.items()})
        net.eval()
        model.net = net
        return model

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(bits={c.bits}, arch={c.arch!r}, image_size={c.image_size}, "
                f"fitted={self.net is not None})")


COLLAPSED = 20  # fewer distinct codes than 1 in this many training images...
FIXED_UNITS = 0.5  # ...and at least this fraction of the code units the same for every image


def collapsed(codes: torch.Tensor, pictures: int | None = None) -> bool:
    """Whether a training sample's codes (n, bits) bool collapsed: fewer distinct codes than 1 in
    COLLAPSED distinct images among those n (``pictures``; all n when not given), with most code
    units fixed (saturated) for every image. Few codes alone are no collapse: a folder of a few groups of
    look-alikes gets about one code per group, but the groups' codes differ in many bits; and a
    folder of copies of one picture rightly gets one code."""
    n = len(codes) if pictures is None else pictures
    if n < 2 or len(torch.unique(codes, dim=0)) >= max(2, n // COLLAPSED):
        return False
    fixed = (codes.all(dim=0) | ~codes.any(dim=0)).float().mean().item()
    return fixed >= FIXED_UNITS


def _split(n: int, cfg: HasherConfig, rng: np.random.Generator) -> Split:
    """A seeded subsample of at most ``max_train`` rows, split into training and validation."""
    idx = np.arange(n)
    if len(idx) > cfg.max_train:
        idx = np.sort(rng.choice(idx, cfg.max_train, replace=False))
    perm = rng.permutation(idx)
    n_val = int(len(perm) * cfg.validation_fraction) if len(perm) >= 20 else 0
    return Split(train=perm[n_val:], val=np.sort(perm[:n_val]))


def _set_threads(threads: int | None) -> None:
    """Use every core by default (torch picks physical cores, which can be fewer than we have)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
