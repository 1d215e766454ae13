"""Past one machine: the Ray engine (``engine="ray"``). Decoding and encoding run as a Ray Data
pipeline (encode.py) and training as a Ray Train TorchTrainer over the data-parallel trainer of
model/parallel.py (train.py); the index run around them (journal, commit) is the local one.
Ray is an optional extra (``pip install 'hashae[ray]'``): nothing here imports it until used."""
from __future__ import annotations

ENGINES = ("local", "ray")


class EngineUnavailable(RuntimeError):
    """The Ray engine was asked for but Ray is not installed."""


def require_ray():
    """Import ray, or say in one line how to install it."""
    try:
        import ray
    except ImportError:
        raise EngineUnavailable("the ray engine needs Ray: pip install 'hashae[ray]'") from None
    return ray


def connect():
    """Ray, connected: to the cluster that ``RAY_ADDRESS`` names (Ray's own convention), to the
    one this process already joined, or else to a new local one."""
    ray = require_ray()
    if not ray.is_initialized():
        import logging
        import os
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True)
        _quiet_ray_data()
    return ray


def _quiet_ray_data() -> None:
    """Ray Data prints every pipeline's start and end, and that its progress bars are off (hashae
    draws one bar per run), on the console; its session log file keeps them. Warnings and
    errors still show."""
    import logging

    import ray.data  # noqa: F401 - configures Ray Data's loggers
    for handler in logging.getLogger("ray.data").handlers:
        if handler.get_name() == "console":
            handler.setLevel(logging.WARNING)
            handler.addFilter(lambda record: "Progress bars disabled" not in record.getMessage())


def cluster_cpus() -> int:
    """CPUs of the connected cluster, alive nodes only."""
    ray = connect()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
