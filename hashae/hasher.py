"""SemanticHasher: the scikit-learn-like face of the model (numpy in, packed uint8 codes out)."""
from __future__ import annotations

import os
import time

import h5py
import numpy as np
import torch

from . import codes as codes_mod
from . import losses
from .augment import random_views
from .config import HasherConfig
from .model import HashNet
from .neighbours import pixel_neighbours
from .pretrain import _mean_over, pretrain_stages
from .train import History, fit_loop

MODEL_FORMAT, MODEL_VERSION = "hashae-model", 1


class SemanticHasher:
    """Deep autoencoder with a noise-forced binary bottleneck.

    ``SemanticHasher(bits=32).fit(images).encode(images)`` -> (n, 4) uint8 codes. Images are
    arrays (n, C, S, S), (n, S, S, C) or, for one channel, (n, S, S); uint8 in [0, 255] or float
    in [0, 1], with S = ``image_size`` and C = ``channels``.
    """

    def __init__(self, config: HasherConfig | None = None, **overrides):
        cfg = config if config is not None else HasherConfig()
        self.config = cfg.replace(**overrides) if overrides else HasherConfig(**cfg.__dict__).validate()
        self.net: HashNet | None = None
        self.history_ = History()
        self.fit_seconds_: float | None = None

    # ------------------------------------------------------------------ training
    def fit(self, images, progress: bool | None = None) -> "SemanticHasher":
        """Pretrain (unless ``pretrain='none'``) and fine-tune on ``images``; returns self."""
        cfg = self.config
        src = ImageArray(images, cfg)
        if len(src) < 2:
            raise ValueError(f"fit needs at least 2 images, got {len(src)}")
        t0 = time.monotonic()
        _set_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        idx = np.arange(len(src))
        if len(idx) > cfg.max_train:
            idx = np.sort(rng.choice(idx, cfg.max_train, replace=False))
        perm = rng.permutation(idx)
        n_val = int(len(perm) * cfg.val_fraction) if len(perm) >= 20 else 0
        val_idx, train_idx = np.sort(perm[:n_val]), perm[n_val:]

        net = HashNet(cfg)
        net.mean.copy_(src.mean(np.sort(train_idx)))
        self.net, self.history_ = net, History()
        if cfg.pretrain == "dae" and cfg.pretrain_epochs > 0:
            pretrain_stages(net, src.batch, train_idx, val_idx, rng, self.history_, progress)

        def recon_loss(i):  # what encode/decode will do: reconstruction through hard bits
            x = src.batch(i)
            return losses.reconstruction(net(x).recon, x)

        self._neighbours = None
        if cfg.neighbour_weight > 0:  # positions into train_sorted of each image's neighbours
            train_sorted = np.sort(train_idx)
            table = pixel_neighbours(src.batch, train_sorted, cfg.neighbour_k, cfg.seed)
            if table.shape[1]:
                self._neighbours = (train_sorted, table, np.random.default_rng(cfg.seed + 1), src)
        fit_loop(net, net.parameters(), lambda i, f: self._finetune_loss(src.batch(i), f, i),
                 (lambda: _mean_over(val_idx, cfg.batch_size * 4, recon_loss)) if n_val else None,
                 train_idx, epochs=cfg.epochs_for(len(train_idx), cfg.epochs, cfg.min_steps),
                 batch_size=cfg.batch_size, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, patience=cfg.patience, watch_from=cfg.noise_anneal, rng=rng,
                 history=self.history_, phase="fine-tune", progress=progress)
        self._neighbours = None
        self.fit_seconds_ = time.monotonic() - t0
        return self

    def _finetune_loss(self, x: torch.Tensor, frac: float, idx: np.ndarray):
        cfg, net = self.config, self.net
        ramp = min(1.0, frac / cfg.noise_anneal) if cfg.noise_anneal > 0 else 1.0
        views = cfg.augment > 0 or cfg.contrastive > 0 or self._neighbours is not None
        if views:  # two views of each image: reconstruct both, agree on bits
            x = torch.cat([random_views(x, cfg.crop_min), random_views(x, cfg.crop_min)])
        out = net(x, noise_std=cfg.noise_std * ramp)
        p = torch.sigmoid(out.logits)
        terms = {"recon": losses.reconstruction(out.recon, x)}
        if cfg.stats_weight > 0:
            terms["stats"] = cfg.stats_weight * losses.stats_loss(out.recon, x)
        if views:
            z1, z2 = out.logits.chunk(2)
        if cfg.augment > 0:
            terms["consistency"] = cfg.augment * losses.consistency(z1, z2)
        if cfg.contrastive > 0:
            terms["contrastive"] = cfg.contrastive * losses.contrastive(z1, z2, cfg.temperature)
        if self._neighbours is not None:
            terms["neighbours"] = cfg.neighbour_weight * losses.contrastive(z1, self._neighbour_logits(idx), cfg.temperature)
        if cfg.balance > 0:
            terms["balance"] = cfg.balance * losses.balance(p)
        if cfg.decorrelation > 0:
            terms["decorrelation"] = cfg.decorrelation * losses.decorrelation(p)
        if cfg.sparsity > 0:
            sp = losses.sparsity_l1(p) if cfg.sparsity_kind == "l1" else losses.sparsity_kl(p, cfg.sparsity_target)
            terms["sparsity"] = cfg.sparsity * sp
        return sum(terms.values()), {k: float(v.detach()) for k, v in terms.items()}

    def _neighbour_logits(self, idx: np.ndarray) -> torch.Tensor:
        """Code-layer logits of an augmented view of one random pixel neighbour of each image."""
        train_sorted, table, rng, src = self._neighbours
        rows = table[np.searchsorted(train_sorted, idx)]
        picked = train_sorted[rows[np.arange(len(idx)), rng.integers(0, rows.shape[1], len(idx))]]
        return self.net.logits(random_views(src.batch(picked), self.config.crop_min))

    # ------------------------------------------------------------------ inference
    def _require_fit(self) -> HashNet:
        if self.net is None:
            raise RuntimeError("this SemanticHasher is not fitted: call .fit(images) or SemanticHasher.load(path)")
        return self.net

    def logits(self, images, batch_size: int = 1024) -> np.ndarray:
        """Code-layer inputs z, (n, bits) float32; the code is z > 0."""
        net = self._require_fit()
        src = ImageArray(images, self.config)
        out = np.empty((len(src), self.config.bits), np.float32)
        with torch.inference_mode():
            for s in range(0, len(src), batch_size):
                i = np.arange(s, min(s + batch_size, len(src)))
                out[i] = net.logits(src.batch(i)).numpy()
        return out

    def encode(self, images, batch_size: int = 1024) -> np.ndarray:
        """Packed codes (n, bits // 8) uint8 in FAISS bit order."""
        return codes_mod.pack(self.logits(images, batch_size) > 0)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructions (n, C, S, S) float32 in [0, 1] of packed codes."""
        net = self._require_fit()
        bits = codes_mod.unpack(codes_mod.as_codes(codes, self.config.bits // 8))
        with torch.inference_mode():
            return net.decode(torch.from_numpy(bits.astype(np.float32))).numpy()

    def reconstruction_error(self, images, batch_size: int = 1024) -> np.ndarray:
        """Per-image mean squared error of reconstructing through the binary code."""
        net = self._require_fit()
        src = ImageArray(images, self.config)
        out = np.empty(len(src), np.float32)
        with torch.inference_mode():
            for s in range(0, len(src), batch_size):
                i = np.arange(s, min(s + batch_size, len(src)))
                x = src.batch(i)
                out[i] = (net(x).recon - x).pow(2).flatten(1).mean(1).numpy()
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, target, overwrite: bool = True) -> None:
        """Write config and weights to an HDF5 file path or an open h5py group (no pickle)."""
        net = self._require_fit()
        if isinstance(target, (str, os.PathLike)):
            with h5py.File(target, "w") as f:
                self.save(f)
            return
        if "weights" in target:
            if not overwrite:
                raise FileExistsError(f"{target.name} already holds a model")
            del target["weights"]
        target.attrs["format"] = MODEL_FORMAT
        target.attrs["format_version"] = MODEL_VERSION
        target.attrs["config"] = self.config.to_json()
        w = target.create_group("weights")
        for name, tensor in net.state_dict().items():
            w.create_dataset(name, data=tensor.detach().cpu().numpy().astype(np.float32))

    @classmethod
    def load(cls, source) -> "SemanticHasher":
        """Rebuild a model from a file path or h5py group written by ``save``; every dataset is
        checked against the shapes the stored config implies before any is read."""
        if isinstance(source, (str, os.PathLike)):
            try:
                f = h5py.File(source, "r")
            except OSError as e:
                raise ValueError(f"{source}: not a readable HDF5 file ({e})") from None
            with f:
                return cls.load(f)
        if source.attrs.get("format") != MODEL_FORMAT or "weights" not in source:
            raise ValueError(f"{source.file.filename}:{source.name} holds no hashae model")
        version = source.attrs.get("format_version")
        if version != MODEL_VERSION:
            version = version.item() if isinstance(version, np.generic) else version
            raise ValueError(f"model format version {version!r} is not supported (this hashae reads {MODEL_VERSION})")
        cfg_text = source.attrs.get("config")
        if isinstance(cfg_text, bytes):
            cfg_text = cfg_text.decode("utf-8", "replace")
        if not isinstance(cfg_text, str):
            raise ValueError("model config attribute is missing or not text")
        model = cls(HasherConfig.from_json(cfg_text))
        net = HashNet(model.config)
        expected = net.state_dict()
        weights = source["weights"]
        if not isinstance(weights, h5py.Group) or set(weights.keys()) != set(expected):
            raise ValueError("stored weights do not match the model config (missing or extra tensors)")
        state = {}
        for name, ref in expected.items():
            ds = weights[name]
            if not isinstance(ds, h5py.Dataset) or ds.shape != tuple(ref.shape) or ds.dtype.kind != "f":
                raise ValueError(f"stored weight {name!r} has shape {getattr(ds, 'shape', None)}, "
                                 f"expected {tuple(ref.shape)} float")
            arr = np.asarray(ds[()], dtype=np.float32)
            if not np.isfinite(arr).all():
                raise ValueError(f"stored weight {name!r} has non-finite values")
            state[name] = torch.from_numpy(arr)
        net.load_state_dict(state)
        net.eval()
        model.net = net
        return model

    def __repr__(self) -> str:
        c = self.config
        return f"SemanticHasher(bits={c.bits}, arch={c.arch!r}, image_size={c.image_size}, fitted={self.net is not None})"


class ImageArray:
    """Adapter from a user's image array (numpy, memmap or h5py dataset) to float batches in the
    model's (n, C, S, S) layout, converting one batch at a time to keep memory bounded."""

    def __init__(self, images, cfg: HasherConfig):
        if isinstance(images, (list, tuple)):
            images = np.stack([np.asarray(a) for a in images]) if len(images) else np.empty((0, *cfg.input_shape))
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        c, s = cfg.channels, cfg.image_size
        shape = tuple(images.shape[1:])
        if shape == (c, s, s):
            self.layout = "chw"
        elif shape == (s, s, c):
            self.layout = "hwc"
        elif c == 1 and shape == (s, s):
            self.layout = "hw"
        else:
            raise ValueError(
                f"images have shape {tuple(images.shape)}; this model takes (n, {c}, {s}, {s}), (n, {s}, {s}, {c})"
                + (f" or (n, {s}, {s})" if c == 1 else "")
                + ": resize them (hashae.load_images does) or set image_size/channels in the config"
            )
        if images.dtype.kind not in "uif":
            raise ValueError(f"images must be numeric (uint8 0..255 or float 0..1), got dtype {images.dtype}")
        self.images, self.cfg = images, cfg
        self.scale = 1 / 255 if images.dtype == np.uint8 else 1.0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        """Images at ``idx`` in that order; any order and repeats are fine."""
        idx = np.asarray(idx)
        if len(idx) > 1 and not (idx[1:] > idx[:-1]).all():  # h5py reads want sorted, distinct rows
            uniq, inverse = np.unique(idx, return_inverse=True)
            return self.batch(uniq)[torch.from_numpy(inverse.ravel())]
        a = np.asarray(self.images[idx], dtype=np.float32)
        if self.scale != 1.0:
            a *= self.scale
        if self.layout == "hwc":
            a = a.transpose(0, 3, 1, 2)
        elif self.layout == "hw":
            a = a[:, None]
        return torch.from_numpy(np.ascontiguousarray(a))

    def mean(self, idx: np.ndarray, batch_size: int = 4096) -> torch.Tensor:
        total = torch.zeros(self.cfg.input_shape, dtype=torch.float64)
        for s in range(0, len(idx), batch_size):
            total += self.batch(idx[s:s + batch_size]).double().sum(0)
        return (total / max(len(idx), 1)).float()


def _set_threads(threads: int | None) -> None:
    """Use every core by default (torch picks physical cores, which can be fewer than we have)."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
