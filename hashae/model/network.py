"""The autoencoder: a stack of stages, each an encoder layer with its mirrored decoder layer.

Keeping each stage's encoder and decoder together is what makes greedy layer-wise pretraining
(pretrain.py) and the unrolled end-to-end network the same object: stage k's decoder is the
mirror of stage k's encoder, and the full decoder runs the stages' decoders in reverse. The
network is built from a ModelConfig alone; how its code layer is made binary while training is
a binarizer's business (binarizers/), so encoding needs nothing but this module.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .features import FeatureBits
from .statistics import image_stats

# budgets for configs read from files, checked on the real modules (check_budget): weights
# (200 MB of float32) and activations of one image through encoder and decoder (16 MB)
MAX_PARAMS = 50_000_000
MAX_ACTIVATIONS = 4_000_000
# inference batches are cut so that one batch's activations stay under this many values (1 GB)
BATCH_ACTIVATIONS = 1 << 28
# multiply-adds per row from which a dense layer's products may run in a lower precision while
# training (HashNet.wide_products): the layers that read and rebuild the pixels of a 32x32 colour
# image (3072 x 512 at fast, 3072 x 1024 at default). Not the grey default's 1024 x 1024: with it
# in bfloat16 the three grey sets lost 0.005 mAP on average and orl_faces on each of three seeds,
# where the colour sets' changes averaged zero (bench/README.md, "Training time": "bfloat16
# products"). A layer's speed-up is much the same at any of these sizes; this bound is quality's.
# A grey model at 64 pixels (4096 x 1024) crosses it, measured on two seeds without loss
WIDE = 1_500_000


class Output(NamedTuple):
    logits: torch.Tensor  # code-layer inputs z, (n, bits)
    code: torch.Tensor  # what the decoder saw: noisy sigmoid / straight-through bits / hard bits
    recon: torch.Tensor  # reconstruction of HashNet.target(input): pixels in [0, 1] or standardised vectors


class Stage(nn.Module):
    """One greedy layer: ``enc`` maps h_{k-1} -> h_k, ``dec`` maps h_k -> h_{k-1}."""

    def __init__(self, enc: nn.Module, dec: nn.Module, is_code: bool = False):
        super().__init__()
        self.enc, self.dec, self.is_code = enc, dec, is_code


class WithStats(nn.Module):
    """A first dense layer that also sees its input's colour and texture statistics
    (image_stats of the mean-centred image it receives, so channel means are relative to the
    training mean) through a linear side branch added to its pre-activations. Pixel layers see
    those statistics only weakly, and the code needs them on sets whose classes are colour and
    texture (land cover). mlp only: on a conv stage the side branch becomes one bias per
    channel, and a conv model collapsed to a single code with it."""

    # image_stats values are ~0.01-0.3 on [0, 1] images; x10 brings them to the pixels' scale
    SCALE = 10.0

    def __init__(self, layer: nn.Module, channels: int, width: int):
        super().__init__()
        self.layer, self.side = layer, nn.Linear(4 * channels, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.side(image_stats(x) * self.SCALE)


class Dense(nn.Linear):
    """nn.Linear whose product runs in ``compute`` (a lower precision) while it trains, if set;
    its weights, gradients and outputs stay float32, and in eval mode it is nn.Linear."""

    compute: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.compute
        if dt is None or not self.training:
            return super().forward(x)
        return F.linear(x.to(dt), self.weight.to(dt), self.bias.to(dt)).float()


def _dense(a: int, b: int, out_act: nn.Module, is_code: bool, unflatten=None) -> Stage:
    enc = [Dense(a, b)] if is_code else [Dense(a, b), nn.ReLU()]
    dec = [Dense(b, a), out_act]
    if unflatten is not None:  # first dense stage: images / conv maps in, vectors out
        enc.insert(0, nn.Flatten())
        dec.append(nn.Unflatten(1, unflatten))
    return Stage(nn.Sequential(*enc), nn.Sequential(*dec), is_code)


def build_stages(cfg: ModelConfig) -> nn.ModuleList:
    """Encoder/decoder stages for ``cfg.arch``; the first decoder ends in a sigmoid (pixels in
    [0, 1]) or, for vectors, nothing (standardised values), inner decoders in ReLU (they
    reconstruct ReLU activations)."""
    if cfg.is_vector:
        dims = [cfg.pca_dims or cfg.dim, *cfg.dense_widths, cfg.learnt_bits]
        return nn.ModuleList(_dense(a, b, nn.ReLU() if i else nn.Identity(), is_code=i == len(dims) - 2)
                             for i, (a, b) in enumerate(zip(dims, dims[1:])))
    stages, c, s = [], cfg.channels, cfg.image_size
    if cfg.arch == "conv":
        for out in cfg.conv_channels:
            act = nn.Sigmoid() if not stages else nn.ReLU()
            enc = nn.Sequential(nn.Conv2d(c, out, 4, stride=2, padding=1), nn.ReLU())
            dec = nn.Sequential(nn.ConvTranspose2d(out, c, 4, stride=2, padding=1), act)
            stages.append(Stage(enc, dec))
            c, s = out, s // 2
    dims = [c * s * s, *cfg.dense_widths, cfg.learnt_bits]
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        act = nn.Sigmoid() if not stages else nn.ReLU()
        stages.append(_dense(a, b, act, is_code=i == len(dims) - 2, unflatten=(c, s, s) if i == 0 else None))
    if cfg.uses_stats_input:  # the first stage (Flatten, Linear[, ReLU]) sees the image itself
        first = stages[0].enc
        stages[0].enc = nn.Sequential(WithStats(first[:2], cfg.channels, first[1].out_features), *first[2:])
    return nn.ModuleList(stages)


class HashNet(nn.Module):
    """Encoder -> code layer -> mirrored decoder, with per-pixel input centering (images) or
    per-dimension standardisation (vectors)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.stages = build_stages(cfg)
        # per-pixel (per-dimension) mean of the training rows, subtracted before the first layer
        self.register_buffer("mean", torch.zeros(cfg.input_shape))
        if cfg.is_vector:  # and each dimension's spread, divided by
            self.register_buffer("scale", torch.ones(cfg.input_shape))
        if cfg.pca_dims:  # then the top principal directions of the standardised rows, and one
            # spread for all of them, so that they keep their share of the variance
            self.register_buffer("components", torch.zeros(cfg.pca_dims, cfg.dim))
            self.register_buffer("spread", torch.ones(1))
        # the code's last feature_bits bits: fixed functions of the image (model/features.py)
        self.features = FeatureBits(cfg.channels, cfg.feature_count) if cfg.feature_count else None
        if cfg.residual_count:  # the linear twin: the training pixels' top principal directions
            self.register_buffer("twin", torch.zeros(cfg.residual_count, math.prod(cfg.input_shape)))

    def residual(self, x: torch.Tensor) -> torch.Tensor | None:
        """Each image's mean squared distance, per pixel, from the subspace of the linear twin
        (the centred image less its projection on ``twin``: PCA's reconstruction error, the
        classic linear anomaly score); None for a model without one."""
        if self.cfg.residual_count == 0:
            return None
        h = (x - self.mean).flatten(1)
        kept = (h @ self.twin.T).pow(2).sum(1)
        return (h.pow(2).sum(1) - kept).clamp_min(0) / h.shape[1]

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the decoder reconstructs: images as they are (pixels in [0, 1]); vectors
        standardised, so that every dimension counts alike whatever its units, and with
        ``pca`` their principal components."""
        if not self.cfg.is_vector:
            return x
        z, read = self._read(x)
        return z if read is None else read / self.spread

    def _read(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A vector's standardised row and (with ``pca``) its principal components before their
        shared spread is divided out; None without components."""
        z = (x - self.mean) / self.scale
        return z, (z @ self.components.T if self.cfg.pca_dims else None)

    def reconstruction_error(self, x: torch.Tensor, recon: torch.Tensor, read: tuple | None = None) -> torch.Tensor:
        """Each row's mean squared error of ``recon`` (the decoder's output) against ``x``: per
        pixel for images; for vectors per value of the scaled row, the principal components the
        network rebuilds and (``error_outside_components``) the part of the row outside them,
        which no code can rebuild and which sets a row unlike the training rows apart. ``read``:
        ``_read(x)`` where the caller has it (``measured``)."""
        if not self.cfg.error_outside_components:
            return (recon - self.target(x)).pow(2).flatten(1).mean(1)
        # components are orthonormal: |z|^2 = |z C^T|^2 + the part outside them
        z, read = self._read(x) if read is None else read
        inside = (recon - read / self.spread).pow(2).sum(1) * self.spread.pow(2)
        outside = (z.pow(2).sum(1) - read.pow(2).sum(1)).clamp_min(0)
        return (inside + outside) / z.shape[1]

    def row_change(self, change: torch.Tensor) -> torch.Tensor:
        """The change to a vector row that moves its ``target`` by ``change``: target's linear
        part inverted (exactly on the principal components it reads). Views of a vector are
        made in the space the model reads and written back through this."""
        if self.cfg.pca_dims:
            change = (change * self.spread) @ self.components
        return change * self.scale

    def logits(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Run the encoder on images in [0, 1] or vectors (through stage ``upto - 1`` if given)."""
        return self.encoded(self.target(x) if self.cfg.is_vector else x - self.mean, upto)

    def encoded(self, h: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The encoder's stages (through ``upto - 1`` if given) on an input already centred
        (images) or read as ``target`` gives it (vectors)."""
        for stage in self.stages[:upto]:
            h = stage.enc(h)
        return h

    def code_logits(self, x: torch.Tensor, learnt: torch.Tensor | None = None) -> torch.Tensor:
        """The whole code's logits (n, bits): the code layer's (``learnt``, computed when not
        given) and then the feature bits' ones."""
        z = self.logits(x) if learnt is None else learnt
        return z if self.features is None else torch.cat([z, self.features(x)], 1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Reconstruct from the learnt bits (n, learnt_bits); feature bits are not decoded."""
        h = code
        for stage in reversed(self.stages):
            h = stage.dec(h)
        return h

    def wide_layers(self) -> list:
        """The dense layers of at least WIDE multiply-adds a row (wide_products); none in a
        vector model, where bfloat16 was not measured (with ``pca=0`` its first layer can be wide)."""
        if self.cfg.is_vector:
            return []
        return [m for m in self.modules() if isinstance(m, Dense) and m.in_features * m.out_features >= WIDE]

    @contextlib.contextmanager
    def wide_products(self, dtype: torch.dtype):
        """Within: the products of the wide layers run in ``dtype`` while training (float32:
        nothing changes); yields the dtype they run in, float32 when there are none. The code
        layer, the losses and the narrower layers stay float32: with every product in bfloat16
        (torch's autocast) the default lost mAP on all six shared sets (bench/README.md,
        "Training time": "bfloat16 products")."""
        wide = self.wide_layers() if dtype != torch.float32 else []
        for m in wide:
            m.compute = dtype
        try:
            yield dtype if wide else torch.float32
        finally:
            for m in wide:
                m.compute = None

    def forward(self, x: torch.Tensor, binarize: Callable | None = None) -> Output:
        """Encode and decode ``x``; the decoder sees ``binarize(z)`` (a training binarizer) or,
        by default, the hard bits z > 0 that encoding stores."""
        return self._output(self.logits(x), binarize)

    def measured(self, x: torch.Tensor) -> tuple[Output, torch.Tensor]:
        """``forward(x)`` and ``reconstruction_error`` of it, reading a vector row through the
        components once (the projection costs more than the network: what an index run needs)."""
        read = self._read(x) if self.cfg.error_outside_components else None
        out = self._output(self.logits(x) if read is None else self.encoded(read[1] / self.spread))
        return out, self.reconstruction_error(x, out.recon, read)

    def _output(self, z: torch.Tensor, binarize: Callable | None = None) -> Output:
        """The code the decoder sees for logits ``z`` (``binarize(z)``, or the hard bits z > 0)
        and its reconstruction."""
        code = binarize(z) if binarize is not None else (z > 0).to(z.dtype)
        return Output(z, code, self.decode(code))


def stage_macs(cfg: ModelConfig) -> list:
    """(encoder, decoder) multiply-adds of one image through each stage, from the shapes alone
    (an empty batch, _trace): what a training step costs, for a progress bar's ETA (model/plan.py)."""
    with torch.device("meta"):
        net = HashNet(cfg)
    counts = [[0, 0] for _ in net.stages]

    def count(k, part):
        def hook(m, inputs, out):
            if isinstance(m, nn.Linear):
                counts[k][part] += m.in_features * m.out_features
            elif isinstance(m, nn.Conv2d):
                counts[k][part] += (math.prod(out.shape[1:]) * m.in_channels // m.groups
                                    * m.kernel_size[0] * m.kernel_size[1])
            elif isinstance(m, nn.ConvTranspose2d):
                counts[k][part] += (math.prod(inputs[0].shape[1:]) * m.out_channels // m.groups
                                    * m.kernel_size[0] * m.kernel_size[1])
        return hook

    _trace(net, cfg, [(m, count(k, part)) for k, stage in enumerate(net.stages)
                      for part, half in enumerate((stage.enc, stage.dec)) for m in half.modules()
                      if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))])
    return [tuple(c) for c in counts]


def _trace(net: nn.Module, cfg: ModelConfig, hooks: list) -> None:
    """Run a copy of ``net`` (built on the meta device) once on an empty batch of ``cfg``'s
    input shape, with the forward ``hooks`` ((module of ``net``, hook) pairs) attached to the
    copy's modules; a hook reads one image's sizes from ``shape[1:]``. Nothing is computed and
    nothing but the copy's uninitialised weights is allocated (within MAX_PARAMS by then). Not
    on the meta device itself: its elementwise ops run Python reference code that imports
    torch._dynamo and sympy, about a second at the start of every query (bench/README.md,
    "Query command")."""
    names = {id(m): name for name, m in net.named_modules()}
    shell = copy.deepcopy(net)  # uninitialised CPU tensors in place of the meta ones (to_empty's
    # empty_like on meta tensors also runs Python reference code)
    shell.load_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in net.state_dict().items()}, assign=True)
    modules = dict(shell.named_modules())
    handles = [modules[names[id(m)]].register_forward_hook(hook) for m, hook in hooks]
    try:
        with torch.no_grad():
            shell(torch.empty((0, *cfg.input_shape)))
    finally:
        for h in handles:
            h.remove()


def param_shapes(cfg: ModelConfig) -> dict:
    """Name -> shape of every tensor in the state dict of ``HashNet(cfg)``, within budget
    (check_budget); nothing is allocated."""
    return {name: tuple(t.shape) for name, t in check_budget(cfg).net.state_dict().items()}


class Budget(NamedTuple):
    params: int  # weights
    activations: int  # values one image produces through encoder and decoder
    net: nn.Module  # the network on the meta device (shapes only)


def check_budget(cfg: ModelConfig) -> Budget:
    """Build ``HashNet(cfg)`` on torch's meta device (shapes only, no memory) and refuse it when
    its weights or one image's activations exceed the budgets."""
    with torch.device("meta"):
        net = HashNet(cfg)
    # stored tensors: the trained weights and the fixed ones (means, spreads, a vector model's
    # principal directions, which a file could make as large as any layer)
    params = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    if params > MAX_PARAMS:
        raise ValueError(f"this config stores {params:,} values (weights and fixed tensors); at most {MAX_PARAMS:,}: "
                         "narrower layers (hidden), a smaller image_size or fewer components (pca) fit")
    sizes = []
    leaves = [m for m in net.modules() if not list(m.children())]
    _trace(net, cfg, [(m, lambda m, i, o: sizes.append(math.prod(o.shape[1:]))) for m in leaves])
    if sum(sizes) > MAX_ACTIVATIONS:
        raise ValueError(f"this config needs {sum(sizes):,} activations per image; at most {MAX_ACTIVATIONS:,}: "
                         "a smaller image_size, fewer conv_channels or narrower layers fit")
    return Budget(params, sum(sizes), net)
