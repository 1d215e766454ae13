"""Training on a Ray cluster: Ray Train's TorchTrainer starts ``workers`` processes joined in a
torch.distributed group (gloo: hashae trains on CPUs) and each runs the ordinary ``Hasher.fit``,
which is data-parallel under a process group (model/parallel.py: shares of one global batch,
averaged gradients, contrastive negatives and batch statistics gathered from every worker).
The training images go to the workers once, through the object store; worker 0 hands the
trained model back through a small actor, so no checkpoint storage is needed, and relays its
progress bars through the same actor to the driver's terminal."""
from __future__ import annotations

import numpy as np

from ..model.config import HasherConfig
from . import connect


def _sink_class(ray):
    @ray.remote(num_cpus=0)
    class ModelSink:
        """Holds what worker 0 trained until the driver takes it."""

        def __init__(self):
            self.value, self.text = None, []

        def put(self, value):
            self.value = value

        def get(self):
            return self.value

        def write(self, text):
            self.text.append(text)

        def drain(self):
            text, self.text = "".join(self.text), []
            return text

    return ModelSink


class _Relay:
    """A terminal-like stream whose writes go to the sink actor (worker 0's progress bars)."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, text):
        if text:
            self.sink.write.remote(text)
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def _train_worker(cfg: dict) -> None:
    """One Ray Train worker: fit on the shared images; worker 0 sends the model back."""
    import contextlib
    import sys
    import warnings

    import ray
    from ray import train

    from ..model.hasher import Hasher
    rank = train.get_context().get_world_rank()
    images = ray.get(cfg["images"][0])
    show = rank == 0 and cfg["progress"]
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(_Relay(cfg["sink"]) if show
                                                                                   else sys.stderr):
        warnings.simplefilter("always")
        hasher = Hasher(cfg["config"]).fit(images, progress=bool(show))
    if rank == 0:
        ray.get(cfg["sink"].put.remote((hasher.state(), hasher.config, hasher.fit_seconds_,
                                        [str(w.message) for w in caught])))


def fit_on_cluster(images: np.ndarray, config: HasherConfig, workers: int, progress: bool | None = None):
    """A model trained by ``workers`` Ray Train workers of one CPU each (at least 1): the same
    recipe as ``Hasher(config).fit(images)``, split over processes. Returns (ModelState, the
    config as trained, seconds, warnings raised in training)."""
    ray = connect()
    import shutil
    import sys
    import tempfile
    import threading

    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    sink = _sink_class(ray).remote()
    storage = tempfile.mkdtemp(prefix="hashae-ray-train-")  # Ray Train's run records; no checkpoints
    config = config.replace(threads=1)  # one core per worker: the workers fill the cluster
    if progress is None:
        progress = sys.stderr.isatty()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"images": [ray.put(np.ascontiguousarray(images))], "config": config, "sink": sink,
                           "progress": progress},
        scaling_config=ScalingConfig(num_workers=max(1, workers), use_gpu=False, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name="hashae-train", storage_path=storage))
    done = threading.Event()

    def relay():  # worker 0's progress bars, drawn here
        while not done.wait(0.2):
            sys.stderr.write(ray.get(sink.drain.remote()))
            sys.stderr.flush()

    shower = threading.Thread(target=relay, daemon=True) if progress else None
    if shower is not None:
        shower.start()
    try:
        trainer.fit()
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        done.set()
        if shower is not None:
            shower.join()
            sys.stderr.write(ray.get(sink.drain.remote()))
    result = ray.get(sink.get.remote())
    if result is None:
        raise RuntimeError("training on the cluster ended without a model (see Ray's logs)")
    return result
