"""HasherConfig: every setting of a semantic hashing model, validated, and serialisable as JSON.

The config travels with the weights (HDF5 attribute), so it is also untrusted input when a
collection comes from someone else: ``validate`` bounds every size before anything is allocated.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field

from .codes import check_bits

ARCHS = ("mlp", "conv")
BINARIZERS = ("noise", "ste")
PRETRAIN = ("dae", "none")
CORRUPTIONS = ("mask", "gaussian", "none")
SPARSITY = ("kl", "l1")

# Bounds for configs read from files: generous for real use, small enough that a hostile file
# cannot ask for gigabytes of weights.
MAX_IMAGE_SIZE = 256
MAX_WIDTH = 8192
MAX_LAYERS = 8
MAX_PARAMS = 50_000_000  # 200 MB of float32 weights


@dataclass
class HasherConfig:
    """Settings of a SemanticHasher; defaults are the ones chosen by bench/quality.py."""

    bits: int = 64
    image_size: int = 32
    channels: int = 3
    arch: str = "mlp"
    # dense widths between the input (mlp) or the last conv stage (conv) and the code layer;
    # None picks the arch's default
    hidden: tuple | None = None
    conv_channels: tuple = (32, 64, 128)
    # binary bottleneck (Salakhutdinov & Hinton 2009): the decoder sees sigmoid(z + N(0, noise_std^2));
    # the paper's variance 16 (std 4) forces |z| well past the noise, i.e. saturated, 0/1 codes
    binarizer: str = "noise"
    noise_std: float = 4.0
    noise_anneal: float = 0.3  # fraction of fine-tuning over which the noise ramps up from 0
    # greedy layer-wise denoising pretraining (Vincent et al. 2008)
    pretrain: str = "dae"
    pretrain_epochs: int = 2
    corruption: str = "mask"
    corruption_level: float = 0.2
    # end-to-end fine-tuning
    epochs: int = 15
    # small folders give few steps per epoch: train for at least this many optimiser steps
    # (pretraining: a quarter of it per stage)
    min_steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    # regularisers on the code-unit probabilities p = sigmoid(z); off by default because
    # bench/quality.py measured them to cost more than they give across sets (64 bits, mAP):
    # balance+decorrelation 0.1 each: cifar10 0.143 -> 0.113 (they pull codes towards z = 0);
    # augmentation consistency 0.3: eurosat 0.232 -> 0.238, cifar10 0.143 -> 0.133
    sparsity: float = 0.0
    sparsity_kind: str = "kl"
    sparsity_target: float = 0.5
    balance: float = 0.0
    decorrelation: float = 0.0
    augment: float = 0.0  # weight of augmentation consistency; 0 turns it off
    # contrastive agreement of two augmented views' codes against the other images of the batch
    # (NT-Xent on +-1 code vectors, whose cosine is 1 - 2 * Hamming / bits): on by default; in
    # the default model it is worth coil20 0.755 -> 0.805 and orl_faces 0.580 -> 0.772 mAP at
    # 64 bits; weights 0.1-1.0 and temperatures 0.1-0.3 were compared
    contrastive: float = 0.2
    temperature: float = 0.3
    crop_min: float = 0.6  # smallest crop area of an augmented view, as a fraction of the image
    # the first encoder layer also sees each image's colour and texture statistics (per-channel
    # mean, spread, gradient energy; model.image_stats) through a small side branch, so the code
    # can carry what pixel MSE neglects without the decoder having to reproduce it: eurosat
    # 0.261 -> 0.325 mAP at 64 bits, cifar10 0.156 -> 0.167. None picks by channels: colour
    # only; on grey images (statistics = lighting) it cost orl_faces 0.828 -> 0.781 and coil20
    # 0.837 -> 0.834 next to the neighbour term. mlp only
    stats_input: bool | None = None
    # weight of matching those statistics in the reconstruction; None picks by channels
    # (stats_weight): colour 0.4, grey 0.05. In colour the statistics are largely hue and
    # texture, which carry meaning (0.4 against 0.05 at 64 bits: cifar10 1.07 -> 1.18x ITQ,
    # eurosat 1.28 -> 1.44x); in grey they are brightness and contrast, largely lighting, and
    # a weight above 0.05 cost the grey face set (orl_faces 0.1: 0.95x ITQ, 0.2: 0.93x, 1.03x)
    stats: float | None = None
    # neighbour term: each image's code must also pick out (NT-Xent against the batch) a view of
    # one of its ``neighbour_k`` nearest training images in PCA-reduced pixel space
    # (neighbours.py), which ties together poses of an object or expressions of a face that
    # crops alone never connect. None picks by channels (neighbour_weight): grey 0.5, colour 0.
    # Measured at 64 bits (mAP): 0.5 on grey lifts coil20 0.795 -> 0.837 and, with the
    # statistics input off, orl_faces 0.772 -> 0.828 (1.10x ITQ); on colour photos pixel
    # neighbours share colour and layout more than content: 0.2 cost cifar10 1.18 -> 1.13x ITQ
    # and eurosat 1.44 -> 1.39x
    neighbours: float | None = None
    neighbour_k: int = 5
    # bookkeeping
    val_fraction: float = 0.1
    patience: int = 4
    max_train: int = 50_000
    seed: int = 0
    threads: int | None = None
    extra: dict = field(default_factory=dict)  # free-form notes kept with the model

    @property
    def dense_widths(self) -> tuple:
        if self.hidden is not None:
            return tuple(self.hidden)
        return (1024, 512, 256) if self.arch == "mlp" else (512,)

    @property
    def stats_weight(self) -> float:
        """``stats``, or when None the default for the channel count (see the field)."""
        if self.stats is not None:
            return self.stats
        return 0.4 if self.channels == 3 else 0.05

    @property
    def neighbour_weight(self) -> float:
        """``neighbours``, or when None the default for the channel count (see the field)."""
        if self.neighbours is not None:
            return self.neighbours
        return 0.5 if self.channels == 1 else 0.0

    @property
    def uses_stats_input(self) -> bool:
        """stats_input (None: colour images) applies to the mlp arch (see model.WithStats for
        why not conv)."""
        wanted = self.stats_input if self.stats_input is not None else self.channels == 3
        return wanted and self.arch == "mlp"

    @property
    def input_shape(self) -> tuple:
        return (self.channels, self.image_size, self.image_size)

    def epochs_for(self, n_train: int, epochs: int, min_steps: int) -> int:
        """``epochs``, raised so that training takes at least ``min_steps`` steps (0 stays 0)."""
        if epochs == 0:
            return 0
        steps_per_epoch = max(1, -(-n_train // self.batch_size))
        return max(epochs, -(-min_steps // steps_per_epoch))

    def replace(self, **changes) -> "HasherConfig":
        return dataclasses.replace(self, **changes).validate()

    def validate(self) -> "HasherConfig":
        """Check every field; raise ValueError naming the field and the allowed values."""
        check_bits(self.bits)
        _choice("arch", self.arch, ARCHS)
        _choice("binarizer", self.binarizer, BINARIZERS)
        _choice("pretrain", self.pretrain, PRETRAIN)
        _choice("corruption", self.corruption, CORRUPTIONS)
        _choice("sparsity_kind", self.sparsity_kind, SPARSITY)
        _int("image_size", self.image_size, 8, MAX_IMAGE_SIZE)
        _int("channels", self.channels, 1, 3)
        if self.channels == 2:
            raise ValueError("channels must be 1 (grey) or 3 (RGB), got 2")
        for name in ("hidden", "conv_channels"):  # a config read from a file may hold anything
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) and not (name == "hidden" and value is None):
                raise ValueError(f"{name} must be a list of layer widths, got {value!r}")
        if self.hidden is not None:
            self.hidden = tuple(self.hidden)
        self.conv_channels = tuple(self.conv_channels)
        for name, widths in (("hidden", self.dense_widths), ("conv_channels", self.conv_channels)):
            if len(widths) > MAX_LAYERS:
                raise ValueError(f"{name} has {len(widths)} layers; at most {MAX_LAYERS}")
            for w in widths:
                _int(name, w, 1, MAX_WIDTH)
        if self.arch == "conv":
            if not self.conv_channels:
                raise ValueError("arch='conv' needs at least one entry in conv_channels")
            if self.image_size % (2 ** len(self.conv_channels)):
                raise ValueError(
                    f"image_size {self.image_size} must be divisible by 2**len(conv_channels) "
                    f"= {2 ** len(self.conv_channels)} for arch='conv'"
                )
        for name in ("pretrain_epochs", "epochs", "patience", "min_steps"):
            _int(name, getattr(self, name), 0, 100_000)
        _int("batch_size", self.batch_size, 1, 1 << 16)
        _int("max_train", self.max_train, 1, 1 << 31)
        _int("seed", self.seed, 0, 2**63 - 1)
        if self.threads is not None:
            _int("threads", self.threads, 1, 4096)
        for name in ("noise_std", "lr", "weight_decay", "sparsity", "balance", "decorrelation",
                     "augment", "contrastive", "corruption_level"):
            _float(name, getattr(self, name), 0.0, 1e6)
        for name in ("stats", "neighbours"):
            if getattr(self, name) is not None:
                _float(name, getattr(self, name), 0.0, 1e6)
        _int("neighbour_k", self.neighbour_k, 1, 1000)
        _float("temperature", self.temperature, 0.01, 10.0)
        for name in ("noise_anneal", "sparsity_target", "val_fraction", "crop_min"):
            _float(name, getattr(self, name), 0.0, 1.0)
        if not 0 <= self.corruption_level < 1 and self.corruption == "mask":
            raise ValueError("corruption_level for masking is a probability in [0, 1)")
        if self.stats_input is not None and not isinstance(self.stats_input, bool):
            raise ValueError(f"stats_input must be true, false or null (by channels), got {self.stats_input!r}")
        if not isinstance(self.extra, dict):
            raise ValueError("extra must be a dict")
        if self.n_params() > MAX_PARAMS:
            raise ValueError(f"this config has {self.n_params():,} weights; at most {MAX_PARAMS:,}")
        return self

    def n_params(self) -> int:
        """Weights of the autoencoder (encoder and mirrored decoder), computed without building it."""
        c, s = self.channels, self.image_size
        total = 0
        if self.arch == "conv":
            for out in self.conv_channels:
                total += 2 * (c * out * 16) + out + c
                c, s = out, s // 2
        dims = [c * s * s, *self.dense_widths, self.bits]
        for a, b in zip(dims, dims[1:]):
            total += 2 * a * b + a + b
        if self.uses_stats_input:  # side branch: 4 statistics per channel -> the first layer
            total += (4 * self.channels + 1) * dims[1]
        return total

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HasherConfig":
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model config is not valid JSON: {e}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> "HasherConfig":
        if not isinstance(data, dict):
            raise ValueError("model config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        # models saved before stats_input existed have no side branch among their weights
        data = {"stats_input": False, **data}
        return cls(**data).validate()


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _float(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
