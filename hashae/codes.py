"""Binary codes: the one place that owns the bit layout.

Codes are packed ``uint8`` rows of ``bits // 8`` bytes in FAISS's binary-index bit order:
bit ``i`` of a code lives in byte ``i // 8`` at position ``i % 8`` counted from the least
significant bit (what ``faiss.fvecs2bitvecs`` writes). This is numpy's ``bitorder="little"``.
"""
from __future__ import annotations

import numpy as np

MIN_BITS, MAX_BITS = 8, 256


def check_bits(bits: int) -> int:
    """Validate a code length; raise a ValueError that says which values are allowed."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ValueError(f"bits must be an integer, got {bits!r}")
    bits = int(bits)
    if not (MIN_BITS <= bits <= MAX_BITS) or bits % 8:
        raise ValueError(
            f"bits must be a multiple of 8 between {MIN_BITS} and {MAX_BITS} (e.g. 16, 32, 64), got {bits}"
        )
    return bits


def pack(bits: np.ndarray) -> np.ndarray:
    """Pack an (n, b) array of 0/1 (or bool) into (n, b // 8) uint8 codes in FAISS bit order."""
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise ValueError(f"expected an (n, bits) array with bits a multiple of 8, got shape {bits.shape}")
    return np.packbits(bits.astype(bool), axis=1, bitorder="little")


def unpack(codes: np.ndarray) -> np.ndarray:
    """Unpack (n, b // 8) uint8 codes into an (n, b) uint8 array of 0/1."""
    codes = as_codes(codes)
    return np.unpackbits(codes, axis=1, bitorder="little")


def as_codes(codes: np.ndarray, nbytes: int | None = None) -> np.ndarray:
    """Return codes as a C-contiguous 2-D uint8 array, checking the row length if given."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise ValueError(f"packed codes must be uint8, got {codes.dtype}; use hashae.codes.pack() on 0/1 bits")
    if codes.ndim == 1:
        codes = codes[None, :]
    if codes.ndim != 2:
        raise ValueError(f"packed codes must be 2-D (n, bits // 8), got shape {codes.shape}")
    if nbytes is not None and codes.shape[1] != nbytes:
        raise ValueError(f"codes have {codes.shape[1] * 8} bits, expected {nbytes * 8}")
    return np.ascontiguousarray(codes)


def popcount(a: np.ndarray) -> np.ndarray:
    """Number of set bits in each element of an unsigned integer array (uint8, uint64, ...)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return _POPCOUNT8[a]
    as_bytes = np.ascontiguousarray(a)[..., None].view(np.uint8)  # numpy < 2: byte by byte
    return _POPCOUNT8[as_bytes].sum(axis=-1, dtype=np.uint8)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between rows of ``a`` and rows of ``b`` (broadcasting), as int32."""
    a, b = np.asarray(a, np.uint8), np.asarray(b, np.uint8)
    return popcount(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int32)


def hamming_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All-pairs Hamming distances (len(a), len(b)) as int32; for small sets and tests
    (large ones go through HammingIndex). Blocks keep the temporary XOR array near 32 MB."""
    a = as_codes(a)
    b = as_codes(b, a.shape[1])
    out = np.empty((len(a), len(b)), dtype=np.int32)
    block = max(1, (32 << 20) // max(1, b.size))
    for s in range(0, len(a), block):
        out[s:s + block] = hamming(a[s:s + block, None, :], b[None, :, :])
    return out


def bit_balance(codes: np.ndarray) -> np.ndarray:
    """Fraction of items with each bit set (0.5 is ideal for retrieval)."""
    return unpack(codes).mean(axis=0)
