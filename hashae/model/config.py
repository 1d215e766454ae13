"""Model settings, in two parts that travel differently.

``ModelConfig`` is what rebuilds the network: it is stored with the weights and, since a
collection may come from someone else, validated whenever a file is opened. ``TrainConfig`` is
how the network was trained: a record kept beside it, never needed to encode. ``HasherConfig``
is the flat recipe a user writes (``HasherConfig(bits=32, epochs=30)``), every field of both;
``.model`` and ``.training`` split it. Why each default is what it is: bench/README.md.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field

from ..codes import check_bits

ARCHS = ("mlp", "conv")
KINDS = ("image", "vector")
# how vectors are scaled before the first layer: each dimension standardised to the training
# rows' mean and spread, after log(1 + x) for counts ("log", the paper's word counts)
SCALINGS = ("standard", "log")
# fields that only vector models write (an image model leaves them out while they hold these
# values): an image model's JSON stays what hashae 0.1 reads
VECTOR_FIELDS = {"kind": "image", "dim": 0, "scaling": "standard", "pca": None, "vector_drop": 0.2, "vector_noise": 0.1,
                 "temperature": None, "row_error": None}
# fields that any model leaves out of its stored JSON while they hold these values, so that a
# file stays readable by the hashae before them
LATER_FIELDS = {"precision": "auto", "neighbour_gate": 0.0, "neighbour_shared": 0, "feature_bits": 0,
                 "residual_dims": 0}
# principal components a vector model reads when its ``pca`` is None: wide vectors (pixels,
# word counts, embeddings) are first projected onto the training rows' top 128 directions
# (bench/README.md, "Vectors": "Principal components first")
PCA_DIMS = 128
# an image model's code gives one bit in this many to its feature bits when feature_bits is None
FEATURE_SHARE = 8
# principal directions of an image model's linear twin when residual_dims is None
RESIDUAL_DIMS = 32
PRETRAIN = ("dae", "none")
# what the widest layers' products run in while training (network.HashNet.wide_products):
# "auto" is bfloat16 where the CPU multiplies it natively (model/train.training_dtype), float32
# elsewhere. Everything else, and encoding, runs in float32
PRECISIONS = ("auto", "float32", "bfloat16")
CORRUPTIONS = ("mask", "gaussian", "none")
SPARSITY = ("kl", "l1")
# where an image's neighbours (the neighbour term's positives) are looked for: its pixels, its
# pixels beside the colour and texture statistics of a coarse grid, or both beside histograms of
# gradient orientation (model/neighbours.py; hasher.NEIGHBOUR_PARTS)
NEIGHBOUR_SPACES = ("pixels", "pixels+stats", "pixels+stats+gradients")

# Bounds for configs read from files: generous for real use, small enough that a hostile file
# cannot ask for gigabytes. The weight and activation budgets are checked on the real modules
# (network.check_budget), not re-derived here.
MAX_IMAGE_SIZE = 256
MAX_DIM = 1 << 16
VECTOR_WIDTHS = (512, 256)  # dense widths of a vector model
MAX_WIDTH = 8192
MAX_LAYERS = 8


@dataclass
class ModelConfig:
    """What rebuilds the network: input kind and shape, architecture, code length."""

    bits: int = 64
    image_size: int = 32
    channels: int = 3
    arch: str = "mlp"
    # dense widths between the input (mlp) or the last conv stage (conv) and the code layer;
    # None picks the arch's default
    hidden: tuple | None = None
    conv_channels: tuple = (32, 64, 128)
    # the first dense layer also sees per-channel image statistics (network.WithStats);
    # None: colour images only. mlp only
    stats_input: bool | None = None
    # "image" (image_size, channels) or "vector" (dim values a row, scaled by ``scaling``; mlp)
    kind: str = "image"
    dim: int = 0
    scaling: str = "standard"
    # vectors: how many principal components of the scaled rows the first layer reads (None:
    # PCA_DIMS for rows of more values, else all of them; 0: the scaled rows themselves)
    pca: int | None = None
    # images: how many of the ``bits`` are ITQ bits of the whole image's channel statistics
    # (model/features.py), the code's last ones; the rest are learnt. 0: every bit is learnt;
    # None: by input (feature_count), made a number when the model is fitted
    feature_bits: int | None = None
    # images: how many principal directions of the training pixels the model keeps as a linear
    # twin of the autoencoder, whose reconstruction error each indexed item stores for the
    # outlier score (network.HashNet.residual). 0: none; None: by input (residual_count)
    residual_dims: int | None = None
    # vectors: whether the reconstruction error an index run stores is over the whole scaled row
    # (the principal components the network rebuilds, and what lies outside them) rather than
    # over those components alone, which cannot see a row unlike the training rows' main
    # directions (bench/README.md, "Outliers": "Vector collections"). None: True, made a value
    # when the model is fitted; vector models saved before it: False
    row_error: bool | None = None

    @property
    def error_outside_components(self) -> bool:
        """Whether a vector model's reconstruction error counts what lies outside the principal
        components it reads (``row_error``; None: yes). Without components it is the whole row."""
        return bool(self.pca_dims) and self.row_error is not False

    @property
    def residual_count(self) -> int:
        """``residual_dims``, or when None RESIDUAL_DIMS for images (bench/README.md,
        "Outliers": "The pixels' principal residual") and none for vectors."""
        if self.residual_dims is not None:
            return self.residual_dims
        return 0 if self.is_vector else RESIDUAL_DIMS

    @property
    def feature_count(self) -> int:
        """``feature_bits``, or when None an eighth of the code for images (8 of 64: the worst
        of the six shared sets rose on each of three seeds; bench/README.md, "Feature bits, the
        default") and none for vectors, which have no image statistics."""
        if self.feature_bits is not None:
            return self.feature_bits
        return 0 if self.is_vector else self.bits // FEATURE_SHARE

    @property
    def learnt_bits(self) -> int:
        """Units of the code layer: the bits that are not feature bits."""
        return self.bits - self.feature_count

    @property
    def is_vector(self) -> bool:
        return self.kind == "vector"

    @property
    def pca_dims(self) -> int:
        """Principal components the network reads, 0 for none (images, narrow vectors, pca=0)."""
        if not self.is_vector or not self.dim:
            return 0
        wanted = self.pca if self.pca is not None else PCA_DIMS
        return wanted if 0 < wanted < self.dim else 0  # as many as the values: a rotation, none

    @property
    def dense_widths(self) -> tuple:
        if self.hidden is not None:
            return tuple(self.hidden)
        if self.is_vector:  # narrower: the image widths overfit sparse counts (bench/README.md, "Vectors")
            return VECTOR_WIDTHS
        return (1024, 512, 256) if self.arch == "mlp" else (512,)

    @property
    def uses_stats_input(self) -> bool:
        """stats_input (None: colour images) applies to the mlp arch (network.WithStats says why
        not conv)."""
        wanted = self.stats_input if self.stats_input is not None else self.channels == 3
        return wanted and self.arch == "mlp" and not self.is_vector

    @property
    def input_shape(self) -> tuple:
        return (self.dim,) if self.is_vector else (self.channels, self.image_size, self.image_size)

    def describe_input(self) -> str:
        """What this model takes, for messages: "32x32 RGB images" or "vectors of 512 floats"."""
        if self.is_vector:
            return f"vectors of {self.dim} values"
        return f"{self.image_size}x{self.image_size} {'RGB' if self.channels == 3 else 'grey'} images"

    def validate(self) -> "ModelConfig":
        """Check every field; raise ValueError naming the field and the allowed values."""
        check_bits(self.bits)
        _choice("arch", self.arch, ARCHS)
        _choice("kind", self.kind, KINDS)
        _choice("scaling", self.scaling, SCALINGS)
        if self.pca is not None:
            _int("pca", self.pca, 0, MAX_DIM)
        if self.is_vector:  # 0: taken from the data when the model is fitted (inputs.for_data)
            _int("dim", self.dim, 0, MAX_DIM)
            if self.arch != "mlp":
                raise ValueError("vectors take arch='mlp' (a conv layer needs an image's neighbouring pixels)")
        elif self.dim:
            raise ValueError(f"dim is the length of a vector; an image model has dim 0, got {self.dim!r}")
        if self.feature_bits is not None:
            _int("feature_bits", self.feature_bits, 0, self.bits // 2)  # most bits stay learnt
        if self.feature_bits and self.is_vector:
            raise ValueError("feature_bits hash image statistics; a vector model has none, set it to 0")
        if self.residual_dims is not None:
            _int("residual_dims", self.residual_dims, 0, 1024)
        if self.residual_dims and self.is_vector:
            raise ValueError("residual_dims is the pixels' linear twin of an image model; set it to 0 for vectors")
        if self.row_error not in (None, True, False):
            raise ValueError(f"row_error must be true, false or null, got {self.row_error!r}")
        if self.row_error and not self.is_vector:
            raise ValueError("row_error is a vector model's (an image's error is over all its pixels); "
                             "set it to null")
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
        if self.stats_input is not None and not isinstance(self.stats_input, bool):
            raise ValueError(f"stats_input must be true, false or null (by channels), got {self.stats_input!r}")
        return self


@dataclass
class TrainConfig:
    """How the network is trained; kept with the model as a record."""

    # binary bottleneck (Salakhutdinov & Hinton 2009): a binarizer from model/binarizers/;
    # "noise" feeds the decoder sigmoid(z + N(0, noise_std^2)), the paper's variance 16
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
    # small folders give few steps per epoch: fine-tune for at least this many optimiser steps
    # (pretraining: a quarter of it per stage); None: by input (HasherConfig.steps_floor), and
    # pretraining a quarter of PRETRAIN_MIN_STEPS per stage
    min_steps: int | None = None
    # large folders give many: train for at most this many (whole epochs, at least one;
    # pretraining: a quarter of it per stage), so that the time of a recipe stops growing with
    # the folder (1,100: about what 15 epochs give 10,000 images); None: exactly ``epochs``. At a
    # fixed number of steps, a larger sample adds little (bench/README.md, "Training time"), so
    # the steps are what the time budget buys
    max_steps: int | None = 1100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    # regularisers on code-unit probabilities p = sigmoid(z); 0 (off) by default: measured to
    # cost more than they give across sets
    sparsity: float = 0.0
    sparsity_kind: str = "kl"
    sparsity_target: float = 0.5
    balance: float = 0.0
    decorrelation: float = 0.0
    augment: float = 0.0  # weight of plain augmentation consistency (hard bits of two views)
    # NT-Xent agreement of two augmented views' relaxed codes against the rest of the batch
    contrastive: float = 0.2
    # of that term and of the neighbour term; None picks by input (HasherConfig.contrast_temperature)
    temperature: float | None = None
    crop_min: float = 0.6  # smallest crop area of an augmented view, as a fraction of the image
    # a vector's augmented view (model/augment.vector_views): this fraction of its dimensions
    # set to the training mean, plus Gaussian noise of this many standard deviations
    vector_drop: float = 0.2
    vector_noise: float = 0.1
    # weight of matching the image statistics in the reconstruction; None picks by channels
    # (HasherConfig.stats_weight)
    stats: float | None = None
    # weight of the neighbour term (a view of one of an image's ``neighbour_k`` nearest training
    # images must be picked out, model/neighbours.py); None picks by channels (neighbour_weight)
    neighbours: float | None = None
    # how many nearest training inputs are positives; None picks by input (neighbour_count)
    neighbour_k: int | None = None
    # images: a neighbour is a positive only if nearer (squared) than this many times the image's
    # own distance to its augmented views; 0: every neighbour is. With neighbours=0.5 and 0.5
    # here, colour photos gain where neighbours share a class and lose where they do not
    # (bench/README.md, "Gated neighbours for colour images": not a default)
    neighbour_gate: float = 0.0
    # a neighbour is a positive only if the two share at least this many of their 2 *
    # neighbour_k nearest (the pair itself counting; 0: off). With the gate and gradients, 3
    # lifts eurosat_val and cifar10_test most of all settings measured, and tinyimagenet_val
    # still loses on three seeds of six: an option (bench/README.md, "The gated gradient
    # neighbours for colour, six seeds; shared neighbours")
    neighbour_shared: int = 0
    # NEIGHBOUR_SPACES; vectors: always their own space. Pixels beside grid statistics find
    # same-class neighbours more often than pixels alone on all six shared sets. Adding gradient
    # histograms lifts faces and glyphs and costs coil20 on every seed: an option, not the
    # default (bench/README.md, "Gradient histograms in the neighbour space")
    neighbour_space: str = "pixels+stats"
    # the time budget the recipe came from (EFFORTS; set by HasherConfig.for_effort), a record
    effort: str = "default"
    # the share of the training sample held out to judge the fit: the weights with the best
    # validation loss are kept and training stops ``patience`` epochs (a tenth of the phase at
    # least) after the last improvement. None: nothing held out (HasherConfig.validation_fraction)
    val_fraction: float | None = None
    patience: int = 4
    max_train: int = 20_000  # images trained on, a seeded sample of a larger folder
    seed: int = 0
    threads: int | None = None
    # PRECISIONS; the fit notes what it ran in as extra["trained_in"]
    precision: str = "auto"
    extra: dict = field(default_factory=dict)  # free-form notes kept with the model

    def epochs_for(self, n_train: int, epochs: int, min_steps: int, max_steps: int | None = None) -> int:
        """``epochs``, raised so that training takes at least ``min_steps`` steps, and lowered
        (to one epoch at least) so that it takes at most ``max_steps``; 0 stays 0."""
        if epochs == 0:
            return 0
        steps_per_epoch = max(1, -(-n_train // self.batch_size))
        epochs = max(epochs, -(-min_steps // steps_per_epoch))
        if max_steps is not None and epochs * steps_per_epoch > max_steps:
            epochs = max(1, max_steps // steps_per_epoch)
        return epochs

    def validate(self) -> "TrainConfig":
        from .binarizers import names as binarizer_names
        _choice("binarizer", self.binarizer, binarizer_names())
        _choice("pretrain", self.pretrain, PRETRAIN)
        _choice("corruption", self.corruption, CORRUPTIONS)
        _choice("sparsity_kind", self.sparsity_kind, SPARSITY)
        _choice("effort", self.effort, tuple(EFFORTS))
        _choice("neighbour_space", self.neighbour_space, NEIGHBOUR_SPACES)
        _choice("precision", self.precision, PRECISIONS)
        for name in ("pretrain_epochs", "epochs", "patience"):
            _int(name, getattr(self, name), 0, 100_000)
        if self.min_steps is not None:
            _int("min_steps", self.min_steps, 0, 100_000)
        if self.max_steps is not None:
            _int("max_steps", self.max_steps, 1, 10_000_000)
        _int("batch_size", self.batch_size, 1, 1 << 16)
        _int("max_train", self.max_train, 1, 1 << 31)
        _int("seed", self.seed, 0, 2**63 - 1)
        if self.threads is not None:
            _int("threads", self.threads, 1, 4096)
        for name in ("noise_std", "lr", "weight_decay", "sparsity", "balance", "decorrelation",
                     "augment", "contrastive", "corruption_level"):
            _float(name, getattr(self, name), 0.0, 1e6)
        _float("neighbour_gate", self.neighbour_gate, 0.0, 1e6)
        for name in ("stats", "neighbours"):
            if getattr(self, name) is not None:
                _float(name, getattr(self, name), 0.0, 1e6)
        if self.neighbour_k is not None:
            _int("neighbour_k", self.neighbour_k, 1, 1000)
        _int("neighbour_shared", self.neighbour_shared, 0, 2001)
        if self.temperature is not None:
            _float("temperature", self.temperature, 0.01, 10.0)
        for name in ("noise_anneal", "sparsity_target", "crop_min", "vector_drop", "vector_noise"):
            _float(name, getattr(self, name), 0.0, 1.0)
        if self.val_fraction is not None:
            _float("val_fraction", self.val_fraction, 0.0, 1.0)
        if not 0 <= self.corruption_level < 1 and self.corruption == "mask":
            raise ValueError("corruption_level for masking is a probability in [0, 1)")
        if not isinstance(self.extra, dict):
            raise ValueError("extra must be a dict")
        return self


FAST_WIDTHS = (512, 256)  # the dense widths of an mlp trained at effort "fast"

# Time budgets as fixed recipes (not timers, so a seed gives the same codes): changes to the
# training settings. Training time per 10,000 images on 2 cores: bench/README.md, "Training time".
# max_steps: about what the recipe's epochs give a folder of 10,000 images, so that a larger
# folder trains as long as that one (on a larger sample, for fewer epochs)
EFFORTS = {
    # fast: about 480 steps whatever the folder (whole epochs, at least 3) through dense layers
    # of 512 and 256 (the mlp's first layer halved: a step costs about half as much), where 240
    # steps through 1024-512-256 left binaryalphadigits and tinyimagenet_val near or below ITQ
    # (bench/README.md, "fast: narrower and longer")
    "fast": dict(epochs=3, min_steps=480, pretrain_epochs=1, max_train=10_000, max_steps=480, hidden=FAST_WIDTHS),
    "default": {},
    # best: the default's recipe, longer; like it, no validation split (a held-out tenth and its
    # early stopping left best below the default on three of six sets: bench/README.md, "best
    # without a validation split")
    "best": dict(epochs=60, min_steps=1600, pretrain_epochs=6, max_steps=4400),
}

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


@dataclass
class HasherConfig(TrainConfig, ModelConfig):
    """Every setting of a SemanticHasher in one flat, validated, JSON-serialisable recipe:
    the fields of ModelConfig (first) and of TrainConfig."""

    @property
    def model(self) -> ModelConfig:
        return ModelConfig(**{k: getattr(self, k) for k in MODEL_FIELDS})

    @property
    def training(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TRAIN_FIELDS})

    @classmethod
    def from_parts(cls, model: ModelConfig, training: TrainConfig | None = None) -> "HasherConfig":
        parts = dataclasses.asdict(training or TrainConfig())
        parts.update(dataclasses.asdict(model))
        return cls(**parts).validate()

    @classmethod
    def for_effort(cls, effort: str = "default", **settings) -> "HasherConfig":
        """The recipe of an effort level ("fast", "default", "best"; EFFORTS), with ``settings``
        on top (an explicit ``epochs`` wins over the level's, and over its step bound)."""
        if effort not in EFFORTS:
            raise ValueError(f"effort must be one of {', '.join(map(repr, EFFORTS))}, got {effort!r}")
        recipe = dict(EFFORTS[effort])
        if settings.get("arch", "mlp") != "mlp":  # the recipe's widths are the mlp's; conv keeps its own
            recipe.pop("hidden", None)
        bound = {} if "epochs" not in settings else {"max_steps": None}  # --epochs N is N epochs
        return cls(**{**recipe, "effort": effort, **bound, **settings}).validate()

    @property
    def stats_weight(self) -> float:
        """``stats``, or when None the default for the channel count: 0.4 colour, 0.05 grey."""
        if self.stats is not None:
            return self.stats
        if self.is_vector:  # image statistics: there are none
            return 0.0
        return 0.4 if self.channels == 3 else 0.05

    @property
    def steps_floor(self) -> int:
        """``min_steps``, or when None the default for the input: 800 fine-tuning steps for
        images (coil20, orl_faces and binaryalphadigits gain from the second 400 on each of three
        seeds; folders above about 7,000 images reach 800 anyway), 400 for vectors (measured
        there; more steps fit the rows rather than the classes). bench/README.md, "Small
        folders: more steps"."""
        if self.min_steps is not None:
            return self.min_steps
        return VECTOR_MIN_STEPS if self.is_vector else IMAGE_MIN_STEPS

    @property
    def validation_fraction(self) -> float:
        """``val_fraction``, or when None none: a model trains on its whole sample and keeps its
        last weights. The validation loss of a held-out tenth picked earlier, worse states, for
        images (bench/README.md, "Small folders: no validation split") and for vectors
        ("Vectors": "No validation split")."""
        return self.val_fraction if self.val_fraction is not None else 0.0

    @property
    def neighbour_weight(self) -> float:
        """``neighbours``, or when None the default for the channel count: 0.5 grey, 0 colour."""
        if self.neighbours is not None:
            return self.neighbours
        if self.is_vector:
            return VECTOR_NEIGHBOURS
        return 0.5 if self.channels == 1 else 0.0

    @property
    def neighbour_count(self) -> int:
        """``neighbour_k``, or when None the default for the input: 3 images, 5 vectors
        (bench/README.md, "Retrieval quality": "Three neighbours for grey images")."""
        if self.neighbour_k is not None:
            return self.neighbour_k
        return VECTOR_NEIGHBOUR_K if self.is_vector else IMAGE_NEIGHBOUR_K

    @property
    def contrast_temperature(self) -> float:
        """``temperature``, or when None the default for the input: 0.3 images, 0.7 vectors
        (bench/README.md, "Vectors": "A warmer contrast")."""
        if self.temperature is not None:
            return self.temperature
        return VECTOR_TEMPERATURE if self.is_vector else IMAGE_TEMPERATURE

    def replace(self, **changes) -> "HasherConfig":
        return dataclasses.replace(self, **changes).validate()

    def validate(self) -> "HasherConfig":
        """Check every field; raise ValueError naming the field and the allowed values."""
        ModelConfig.validate(self)
        TrainConfig.validate(self)
        if self.is_vector and self.neighbour_gate:
            raise ValueError("neighbour_gate applies to images (it compares a neighbour with the image's own crops); "
                             "set it to 0 for vectors")
        return self

    def to_json(self) -> str:
        return json.dumps(without_image_defaults(dataclasses.asdict(self)), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "HasherConfig":
        return cls.from_dict(parse_json_object(text, "model config"))

    @classmethod
    def from_dict(cls, data: dict) -> "HasherConfig":
        """A config from a flat dict (unknown fields refused). Models saved before stats_input
        existed have no side branch among their weights, so a missing stats_input is False;
        those saved before neighbour_space found neighbours by pixels, those saved before
        feature_bits learnt every bit, those saved before residual_dims have no linear twin;
        vector models saved before pca read their scaled rows (pca 0), and those saved before
        row_error store the error over their principal components alone."""
        if not isinstance(data, dict):
            raise ValueError("model config must be a JSON object")
        unknown = sorted(set(data) - set(MODEL_FIELDS) - set(TRAIN_FIELDS))
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        before = {"stats_input": False, "neighbour_space": "pixels", "feature_bits": 0, "residual_dims": 0}
        if data.get("kind") == "vector":
            before.update(pca=0, row_error=False)
        return cls(**{**before, **data}).validate()


# weight of the input-space neighbour term on vectors (bench/README.md, "Vectors")
VECTOR_NEIGHBOURS = 0.5
# positives of the neighbour term: an image's 3 nearest training images (5 until 2026-11-29: 3
# lifted orl_faces, the worst grey set, on three seeds of default and fast and on best's one,
# and cost the glyphs, the grey set furthest above ITQ, up to 0.09x); a vector's 5 nearest rows
# (3 cost three of seven vector sets and left their worst where it was)
IMAGE_NEIGHBOUR_K, VECTOR_NEIGHBOUR_K = 3, 5
# the contrastive and neighbour terms' temperature by input. 0.7 for vectors: against the
# images' 0.3 their worst of seven sets rose on each of three seeds, and the mean by
# 0.05-0.06x ITQ; on images 0.5 already cost orl_faces and binaryalphadigits 0.02-0.04 mAP
# (bench/README.md, "Vectors": "A warmer contrast")
IMAGE_TEMPERATURE, VECTOR_TEMPERATURE = 0.3, 0.7
# the fewest fine-tuning steps of a fit when min_steps is None (HasherConfig.steps_floor), and
# the steps that set pretraining's floor then (a quarter of them per stage). Pretraining's floor
# stays where it was: raised with fine-tuning's, it doubled the pretraining epochs of 10,000
# photos and cost tinyimagenet_val 0.07-0.15x ITQ (bench/README.md, "Small folders: more steps")
IMAGE_MIN_STEPS, VECTOR_MIN_STEPS, PRETRAIN_MIN_STEPS = 800, 400, 400


def without_image_defaults(fields: dict, kind: str | None = None) -> dict:
    """A config's fields without the later ones (LATER_FIELDS) and, on an image model
    (``kind``, default: the fields' own), the vector-only ones, while they hold their defaults:
    an image model's stored JSON is what hashae before vectors reads."""
    fields = {k: v for k, v in fields.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if (kind or fields.get("kind", "image")) != "image":
        return fields
    return {k: v for k, v in fields.items() if not (k in VECTOR_FIELDS and v == VECTOR_FIELDS[k])}


def describe_settings(settings: dict | None) -> str:
    """One line for people about a stored model's settings (`hashae info`, the server's page);
    a damaged config is described, not raised."""
    if not settings:
        return "none (codes only)"
    try:
        cfg = HasherConfig.from_dict(settings)
    except (TypeError, ValueError) as e:
        return f"unreadable config ({e})"
    widths = "-".join(str(w) for w in cfg.dense_widths)
    shape = f"vectors d={cfg.dim} {cfg.scaling}" if cfg.is_vector else f"{cfg.image_size}px x{cfg.channels}"
    if cfg.pca_dims:
        shape += f" pca={cfg.pca_dims}" + ("" if cfg.error_outside_components else " error=components")
    if cfg.feature_count:
        shape += f" bits={cfg.learnt_bits} learnt+{cfg.feature_count} statistics"
    if cfg.residual_count:
        shape += f" twin={cfg.residual_count}"
    trained_in = cfg.extra.get("trained_in")  # what the wide layers' products ran in (model/hasher.py)
    return (f"{cfg.arch} {shape} layers {widths} "
            f"binarizer={cfg.binarizer} pretrain={cfg.pretrain} effort={cfg.effort}"
            + (f" trained_in={trained_in}" if isinstance(trained_in, str) else ""))


def parse_json_object(text, what: str) -> dict:
    """``text`` (str or bytes) parsed as a JSON object, or a ValueError naming ``what``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object")
    return data


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def _float(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
