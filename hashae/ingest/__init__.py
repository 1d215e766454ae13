"""Ingest: files in, model inputs out. ``scan`` finds the image files of a folder, ``decode``
turns one file into the model's input (the one path every caller uses), ``pipeline`` decodes
many in worker processes, ``perceptual`` hashes what was decoded. Knows nothing of the model
or of storage: an encoder, if any, is a function it is handed."""
from __future__ import annotations

import os

from .decode import (Decoded, ImageError, decode_bytes, decode_file, is_grey, load_image, model_input, sharpness,
                     thumbnail, thumbnail_jpeg)
from .perceptual import phash
from .pipeline import Batch, iter_batches, load_images
from .scan import FileEntry, image_extensions, scan


def load_folder(folder, size: int = 32, channels: int = 3, workers: int = 0):
    """Scan and decode a folder: ``(images, relative_paths, skipped)``, skipped as (path, reason)."""
    folder = os.path.expanduser(os.fspath(folder))
    entries, skipped = scan(folder)
    paths = [e.path for e in entries]
    images, ok, failures = load_images([os.path.join(folder, p) for p in paths], size, channels, workers)
    skipped += [(paths[i], reason) for i, reason in failures]
    return images, [paths[i] for i in ok], skipped


__all__ = ["Batch", "Decoded", "FileEntry", "ImageError", "decode_bytes", "decode_file", "sharpness", "thumbnail", "thumbnail_jpeg", "image_extensions", "is_grey",
           "iter_batches", "load_folder", "load_image", "load_images", "model_input", "phash", "scan"]
