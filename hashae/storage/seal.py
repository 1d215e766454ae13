"""Which folder a collection may read images from. A collection file names the folder it was
indexed from, but a file received from someone else must not choose what is read from this
disk. So the writer seals the folder name: an HMAC of (generation, folder) under a key only
this user holds (``~/.config/hashae/key``, made on first use, mode 0600). A folder whose seal
checks was named by this user on this machine; any other must be named again by the caller."""
from __future__ import annotations

import hashlib
import hmac
import os

KEY_ENV = "HASHAE_KEY_FILE"  # where the key lives, if not in the default place
KEY_BYTES = 32


def key_path() -> str:
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV]
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "hashae", "key")


def _key(create: bool) -> bytes | None:
    path = key_path()
    try:
        with open(path, "rb") as f:
            key = f.read(KEY_BYTES + 1)
        return key if len(key) == KEY_BYTES else None
    except FileNotFoundError:
        if not create:
            return None
    except OSError:
        return None
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(KEY_BYTES))
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError:
        return None  # no writable home: nothing is sealed, every folder must be named
    return _key(create=False)


def _mac(key: bytes, generation: str, folder: str) -> str:
    message = f"{generation}\0{folder}".encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal(generation: str, folder: str) -> str:
    """The seal of ``folder`` for a store of this generation ("" if no key can be had)."""
    key = _key(create=True)
    return _mac(key, generation, folder) if key and folder else ""


def verify(generation: str, folder: str, mac: str) -> bool:
    """True when ``mac`` is this user's seal of ``folder`` for this generation."""
    key = _key(create=False)
    return bool(key and folder and mac) and hmac.compare_digest(_mac(key, generation, folder), mac)
