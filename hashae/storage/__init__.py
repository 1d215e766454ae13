"""Storage: the collection file and everything beside it. ``layout`` names every HDF5 path,
dtype and attribute (and reads and writes model weights); ``items`` is the record of rows;
``store`` writes whole files atomically and reads them validated; ``journal`` keeps an
interrupted run's work; ``lock`` keeps one writer per store; ``atomic`` writes files whole.
Takes configs and state dicts (model.ModelState), never the model object itself."""
from .atomic import StoreWriteError
from .items import Items
from .lock import StoreBusy, StoreLock
from .store import StoreContents, StoreError, StoreReader, write_store

__all__ = ["Items", "StoreBusy", "StoreContents", "StoreError", "StoreLock", "StoreReader", "StoreWriteError",
           "write_store"]
