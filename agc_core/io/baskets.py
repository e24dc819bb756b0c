"""ROOT baskets into numpy: decompression (zlib, LZ4, zstd, lzma), decoding one basket, and
concatenating a branch's baskets into flat arrays (the reader's only per-entry loops, in numba).
"""

from __future__ import annotations

import lzma
import struct
import sys
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import cramjam
import numba
import numpy as np
import xxhash

if TYPE_CHECKING:
    from agc_core.io.branches import _Plan

_KEY = struct.Struct(">ihiIhh")        # TKey: fNbytes, fVersion, fObjlen, fDatime, fKeylen, fCycle
_BASKET = struct.Struct(">Hiiii")      # TBasket: fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast
_BLOCK = struct.Struct("<2sB3s3s")     # compression block: algorithm, method, c-size, u-size (LE)
_NATIVE_SWAP = sys.byteorder == "little"


# ---------------------------------------------------------------------------------------------
# decompression


def _zlib_backends() -> dict[str, Callable[[np.ndarray, np.ndarray], int]]:
    """Available zlib decompressors, fastest first: each writes into ``out``, returns bytes."""
    backends: dict[str, Callable[[np.ndarray, np.ndarray], int]] = {}
    try:  # libdeflate: ~2x zlib's speed (a dependency; the others stay as fallbacks)
        import deflate  # type: ignore[import-not-found]

        def _libdeflate(src: np.ndarray, out: np.ndarray) -> int:
            res = deflate.zlib_decompress(src, len(out))
            out[: len(res)] = np.frombuffer(res, np.uint8)
            return len(res)

        backends["libdeflate"] = _libdeflate
    except ImportError:
        pass

    def _cramjam(src: np.ndarray, out: np.ndarray) -> int:
        return int(cramjam.zlib.decompress_into(src, out))

    def _zlib(src: np.ndarray, out: np.ndarray) -> int:
        res = zlib.decompress(src, bufsize=len(out))
        out[: len(res)] = np.frombuffer(res, np.uint8)
        return len(res)

    backends["cramjam"] = _cramjam  # ~1.3x zlib's speed; cramjam comes with uproot
    backends["zlib"] = _zlib
    return backends


ZLIB_BACKENDS = _zlib_backends()
_zlib_name = next(iter(ZLIB_BACKENDS))
_zlib_into = ZLIB_BACKENDS[_zlib_name]


def zlib_backend() -> str:
    """Name of the zlib decompressor in use (``libdeflate``, ``cramjam`` or ``zlib``)."""
    return _zlib_name


def decompress_into(src: np.ndarray, out: np.ndarray) -> None:
    """Decompress a ROOT compressed payload (one or more blocks) into ``out``.

    Handles ROOT's 9-byte block headers: ``ZL`` (zlib), ``L4`` (LZ4 with xxhash64 checksum),
    ``ZS`` (zstd), ``XZ`` (lzma).

    Args:
        src: the compressed bytes (``uint8``).
        out: ``uint8`` buffer of exactly the uncompressed size.

    Raises:
        ValueError: unknown algorithm, bad checksum, or sizes that do not add up.
    """
    pos = 0
    filled = 0
    n = len(src)
    while pos < n:
        if pos + 9 > n:
            raise ValueError(f"compressed payload ends inside a block header at byte {pos}")
        algo, _method, c3, u3 = _BLOCK.unpack(src[pos:pos + 9].tobytes())
        csize = int.from_bytes(c3, "little")
        usize = int.from_bytes(u3, "little")
        block = src[pos + 9:pos + 9 + csize]
        if len(block) != csize:
            raise ValueError(f"compressed block at byte {pos} is cut ({len(block)} of {csize} "
                             f"bytes)")
        dest = out[filled:filled + usize]
        if len(dest) != usize:
            raise ValueError(f"blocks decompress to more than the {len(out)} bytes expected")
        if algo == b"ZL":
            got = _zlib_into(block, dest)
        elif algo == b"L4":
            checksum = int.from_bytes(block[:8].tobytes(), "big")
            payload = block[8:]
            if xxhash.xxh64_intdigest(payload) != checksum:
                raise ValueError(f"LZ4 block at byte {pos}: checksum mismatch")
            got = int(cramjam.lz4.decompress_block_into(payload, dest))
        elif algo == b"ZS":
            got = int(cramjam.zstd.decompress_into(block, dest))
        elif algo == b"XZ":
            res = lzma.decompress(block.tobytes())
            got = len(res)
            dest[:got] = np.frombuffer(res, np.uint8)[:usize]
        else:
            raise ValueError(f"unknown compression algorithm {algo!r} at byte {pos}")
        if got != usize:
            raise ValueError(f"block at byte {pos} decompressed to {got} bytes, expected {usize}")
        pos += 9 + csize
        filled += usize
    if filled != len(out):
        raise ValueError(f"payload decompressed to {filled} bytes, expected {len(out)}")


class _Basket(NamedTuple):
    """A decoded basket: its data bytes and per-entry byte offsets (None for fixed size)."""

    data: np.ndarray
    byte_offsets: np.ndarray | None
    num_entries: int


def decode_basket(raw: np.ndarray) -> _Basket:
    """Decode one free-standing basket (TKey + TBasket header + payload).

    Args:
        raw: the basket's bytes as stored (``fBasketBytes`` long), ``uint8``.

    Returns:
        The uncompressed data (entry contents) and, for variable-size entries, the int64 byte
        offsets of the entries within it (length ``num_entries + 1``).

    Raises:
        ValueError: the bytes are not a consistent basket (cut, corrupt).
    """
    if len(raw) < _KEY.size:
        raise ValueError(f"basket is cut: {len(raw)} bytes, shorter than its key header")
    nbytes, _kv, objlen, _dt, keylen, _cycle = _KEY.unpack(raw[:_KEY.size].tobytes())
    if nbytes != len(raw) or not _KEY.size + _BASKET.size < keylen <= nbytes or objlen < 0:
        raise ValueError(f"basket header is inconsistent (fNbytes={nbytes}, fKeylen={keylen}, "
                         f"{len(raw)} bytes read)")
    head = raw[keylen - _BASKET.size - 1:keylen - 1].tobytes()
    _version, _bufsize, _nevbufsize, nevbuf, last = _BASKET.unpack(head)
    border = last - keylen
    if not 0 <= border <= objlen or nevbuf < 0:
        raise ValueError(f"basket header is inconsistent (fLast={last}, fObjlen={objlen})")
    if nbytes - keylen == objlen:  # stored uncompressed
        payload = raw[keylen:nbytes]
    else:
        payload = np.empty(objlen, np.uint8)
        decompress_into(raw[keylen:nbytes], payload)
    if border == objlen:
        return _Basket(payload, None, nevbuf)
    stored = payload[border:border + 4 * (nevbuf + 1)].view(">i4")
    if len(stored) < nevbuf + 1 or stored[0] < nevbuf:
        raise ValueError(f"basket entry offsets are cut ({len(stored)} for {nevbuf} entries)")
    byte_offsets = np.empty(nevbuf + 1, np.int64)
    np.subtract(stored[1:nevbuf + 1], keylen, out=byte_offsets[:nevbuf])
    byte_offsets[nevbuf] = border
    return _Basket(payload[:border], byte_offsets, nevbuf)


# ---------------------------------------------------------------------------------------------
# numba helpers (the only per-entry loops of the reader)


@numba.njit(cache=True, nogil=True)
def _offsets_from_bytes(byte_offsets, lo, hi, header, shift, out, at, base):  # pragma: no cover
    """Write item offsets of entries [lo, hi) into out[at+1 : at+1+hi-lo] continuing from base.

    Items are ``1 << shift`` bytes. Returns the new base, or -(1 + i) for the first entry i
    whose byte count is negative or not a whole number of items.
    """
    mask = (1 << shift) - 1
    for i in range(lo, hi):
        nb = byte_offsets[i + 1] - byte_offsets[i] - header
        if nb < 0 or (nb & mask) != 0:
            return -(1 + i)
        base += nb >> shift
        at += 1
        out[at] = base
    return base


@numba.njit(cache=True, nogil=True)
def _strip_headers(data, byte_offsets, lo, hi, header, out, pos):  # pragma: no cover
    """Copy the contents of entries [lo, hi), dropping each entry's header bytes, to out[pos:]."""
    for i in range(lo, hi):
        a = byte_offsets[i] + header
        n = byte_offsets[i + 1] - a
        out[pos:pos + n] = data[a:a + n]
        pos += n
    return pos


# ---------------------------------------------------------------------------------------------
# a branch's baskets into flat arrays


def _read_scalar(pieces: list[tuple[_Basket, int, int]], plan: _Plan, n: int) -> np.ndarray:
    """Concatenate a fixed-size branch's entries, converting to native byte order."""
    out = np.empty(n, plan.to_dtype)
    pos = 0
    size = plan.from_dtype.itemsize
    for basket, lo, hi in pieces:
        if len(basket.data) < hi * size:
            raise ValueError(f"basket holds {len(basket.data)} bytes, fewer than {hi} entries "
                             f"of {size} bytes")
        out[pos:pos + hi - lo] = basket.data[lo * size:hi * size].view(plan.from_dtype)
        pos += hi - lo
    return out


def _read_jagged(pieces: list[tuple[_Basket, int, int]], plan: _Plan, n: int,
                 start: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate a jagged branch's entries: (flat native content, int64 offsets)."""
    size = plan.from_dtype.itemsize
    shift = size.bit_length() - 1
    if 1 << shift != size:  # numeric dtypes have 1, 2, 4 or 8 bytes
        raise _NeedsUproot
    offsets = np.empty(n + 1, np.int64)
    offsets[0] = 0
    at = 0
    base = 0
    for basket, lo, hi in pieces:
        bo = basket.byte_offsets
        if bo is None:
            raise _NeedsUproot
        if len(bo) != basket.num_entries + 1 or bo[0] < 0 or bo[-1] > len(basket.data):
            raise ValueError("basket entry offsets do not fit its data")
        res = _offsets_from_bytes(bo, lo, hi, plan.header, shift, offsets, at, base)
        if res < 0:
            raise ValueError(f"entry {start + at + (-res - 1 - lo)} has an impossible size")
        at += hi - lo
        base = res
    content = np.empty(base, plan.to_dtype)
    pos = 0
    swap = plan.from_dtype.byteorder == ">" and _NATIVE_SWAP and size > 1
    for basket, lo, hi in pieces:
        bo = basket.byte_offsets
        if plan.header == 0:
            seg = basket.data[bo[lo]:bo[hi]].view(plan.from_dtype)
            content[pos:pos + len(seg)] = seg
            pos += len(seg)
        else:
            raw = content.view(np.uint8)
            end = _strip_headers(basket.data, bo, lo, hi, plan.header, raw, pos * size)
            if swap:
                content[pos:end // size].byteswap(inplace=True)
            pos = end // size
    return content, offsets


class _NeedsUproot(Exception):
    """A branch layout the native decoder does not handle (e.g. counts from a counter branch)."""
