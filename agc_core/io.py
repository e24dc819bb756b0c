"""Columnar reader: branches of one ROOT file's entry range into flat numpy arrays plus offsets."""

from __future__ import annotations

import bisect
import contextlib
import difflib
import logging
import lzma
import mmap
import os
import queue
import statistics
import struct
import sys
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import cramjam
import numba
import numpy as np
import xxhash

from agc_core import remote
from agc_core.bytecache import ByteCache, file_key
from agc_core.config import AnalysisConfig
from agc_core.errors import ConfigError, InputError
from agc_core.fileset import is_url
from agc_core.lazyimport import LazyModule

uproot: Any = LazyModule("uproot")  # a worker reading planned files never imports it
#: the uproot source class of local files (None: its ``MemmapSource``)
LOCAL_SOURCE: type | None = None


def _source_class(module: str, name: str) -> type | None:
    """An uproot source class if uproot has loaded it (else no object can be one of them)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


log = logging.getLogger(__name__)

#: how many opened files each process keeps (opening costs ~4-10 ms, a chunk ~10-100 ms)
OPEN_FILES_MAX = 8

#: the byte cache remote reads go through in this process (None: none), see set_byte_cache
_BYTE_CACHE: ByteCache | None = None


def set_byte_cache(cache: ByteCache | None) -> None:
    """Read remote files of this process through ``cache`` (None: straight from the network)."""
    global _BYTE_CACHE
    _BYTE_CACHE = cache


def byte_cache() -> ByteCache | None:
    """The byte cache in use by this process (:func:`set_byte_cache`)."""
    return _BYTE_CACHE

_KEY = struct.Struct(">ihiIhh")        # TKey: fNbytes, fVersion, fObjlen, fDatime, fKeylen, fCycle
_BASKET = struct.Struct(">Hiiii")      # TBasket: fVersion, fBufferSize, fNevBufSize, fNevBuf, fLast
_BLOCK = struct.Struct("<2sB3s3s")     # compression block: algorithm, method, c-size, u-size (LE)
_NATIVE_SWAP = sys.byteorder == "little"


class Chunk(NamedTuple):
    """The branches of one file's entry range, as flat arrays.

    Attributes:
        n_events: ``entry_stop - entry_start``.
        entry_start: first entry read (global index in the file).
        entry_stop: one past the last entry read.
        columns: branch name -> flat contiguous array in the stored dtype, native byte order
            (``float32`` for float branches). For a jagged branch, the content of all its
            events; for a per-event scalar (``met_pt``), one value per event. Other types
            uproot reads (strings, nested vectors): one Python object per event
            (``dtype=object``) and no offsets.
        offsets: collection name (the branch-name part before the first ``_``: ``jet`` for
            ``jet_pt``) -> ``int64`` offsets of length ``n_events + 1`` starting at 0, shared
            by every jagged branch of the collection. Scalars have none.
        bytes_read: compressed bytes of the baskets read (whole baskets including their key
            headers, as stored in the file: ``fBasketBytes``), i.e. what came from storage; a
            basket that straddles two chunks counts in both.
    """

    n_events: int
    entry_start: int
    entry_stop: int
    columns: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    bytes_read: int


@dataclass(frozen=True)
class FileInfo:
    """What :func:`check_file` learned about a file.

    Attributes:
        path: the file (as given).
        tree: the tree name.
        num_entries: number of entries (events) of the tree.
        branches: every branch name of the tree.
        compressed_bytes: compressed size (all baskets, ``fZipBytes``) of the checked branches.
    """

    path: str
    tree: str
    num_entries: int
    branches: tuple[str, ...]
    compressed_bytes: int


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
# opening files (cached per process)


class _Handle:
    """An opened file with its trees, cached by :func:`_acquire`.

    ``users`` counts the readers holding it; a handle dropped from the cache (``evicted``) is
    closed by its last reader, never under another thread's feet (a memory-mapped file that is
    closed while a thread reads it crashes the process).
    """

    def __init__(self, path: str, directory: Any) -> None:
        self.path = path
        self.directory = directory
        self.trees: dict[str, Any] = {}
        self.users = 0
        self.evicted = False
        self.closed = False


_cache: OrderedDict[tuple[Any, ...], _Handle] = OrderedDict()
_cache_lock = threading.Lock()
_cache_pid = os.getpid()


def _evict_locked(handle: _Handle) -> bool:
    """Mark a handle dropped from the cache (lock held); True when the caller must close it."""
    handle.evicted = True
    if handle.users == 0 and not handle.closed:
        handle.closed = True
        return True
    return False


def _close_all(handles: Iterable[_Handle]) -> None:
    for handle in handles:
        with contextlib.suppress(Exception):
            handle.directory.close()


def close_files() -> None:
    """Close every file this process keeps open for :func:`read_chunk` (a cache).

    Files another thread is reading are closed when that thread is done with them.
    """
    global _cache_pid
    to_close = []
    with _cache_lock:
        if _cache_pid == os.getpid():
            to_close = [h for h in _cache.values() if _evict_locked(h)]
        _cache.clear()
        _cache_pid = os.getpid()
    _close_all(to_close)


def open_files() -> int:
    """How many files the cache holds open now (for tests)."""
    with _cache_lock:
        return len(_cache)


def _local_path(path: str) -> str | None:
    """The local filesystem path of ``path`` or None for a remote URL."""
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if is_url(path) else path


def _root_header_end(local: str) -> int | None:
    """The file length declared in a ROOT file's header (``fEND``), None if not a ROOT file."""
    with open(local, "rb") as fh:
        head = fh.read(32)
    if len(head) < 20 or head[:4] != b"root":
        return None
    version = int.from_bytes(head[4:8], "big")
    if version >= 1000000:
        return int.from_bytes(head[12:20], "big") if len(head) >= 20 else None
    return int.from_bytes(head[12:16], "big")


def _check_local(path: str, local: str) -> os.stat_result:
    """Check that a local file exists, is not empty and is not shorter than its header says.

    Raises:
        InputError: missing, a directory, unreadable, empty, not ROOT, or truncated.
    """
    try:
        st = os.stat(local)
        if os.path.isdir(local):
            raise InputError(f"{path}: is a directory, not a ROOT file")
        if st.st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes), not a ROOT file")
        end = _root_header_end(local)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except PermissionError as exc:
        raise InputError(f"{path}: cannot read file (permission denied)") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    if end is None:
        raise InputError(f"{path}: not a ROOT file (no 'root' signature at its start)")
    if st.st_size < end:
        raise InputError(f"{path}: truncated file: {st.st_size} bytes, but its ROOT header "
                         f"declares {end}")
    return st


def check_local_file(path: str) -> os.stat_result:
    """Check a local file as :func:`read_chunk` does before opening it (exists, not empty, a
    ROOT file, not shorter than its header says): its ``os.stat``.

    Raises:
        InputError: naming the file and the problem.
    """
    local = _local_path(path)
    if local is None:
        raise InputError(f"{path}: not a local file")
    return _check_local(path, local)


def _acquire(path: str) -> _Handle:
    """Open ``path`` (local path or URL) or take the cached handle; the caller must release it.

    Raises:
        InputError: the file cannot be opened as ROOT file (a network problem is a
            :class:`agc_core.remote.TransientInputError`, retried by the executors).
    """
    global _cache_pid
    local = _local_path(path)
    if local is not None:
        st = _check_local(path, local)
        key: tuple[Any, ...] = (os.path.abspath(local), st.st_ino, st.st_size, st.st_mtime_ns)
    else:
        key = (path,)
    with _cache_lock:
        if _cache_pid != os.getpid():  # forked: the parent's handles are not ours to use
            _cache.clear()
            _cache_pid = os.getpid()
        handle = _cache.get(key)
        if handle is not None:
            _cache.move_to_end(key)
            handle.users += 1
            return handle
    try:
        if local is not None:
            from uproot.source.file import MemmapSource

            directory = uproot.open(local, handler=LOCAL_SOURCE or MemmapSource,
                                    array_cache=None)
        else:
            directory = uproot.open(path, array_cache=None, **remote.open_options(path))
    except (MemoryError, KeyboardInterrupt, InputError):
        raise
    except Exception as exc:
        err = remote.remote_error(exc, path, "cannot open")
        if err is not None:
            raise err from exc
        raise InputError(f"{path}: cannot open as ROOT file ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from exc
    handle = _Handle(path, directory)
    handle.users = 1
    to_close = []
    with _cache_lock:
        other = _cache.get(key)
        if other is not None and not other.evicted:  # another thread opened it meanwhile
            other.users += 1
            _cache.move_to_end(key)
            handle.closed = True
            to_close.append(handle)
            handle = other
        else:
            _cache[key] = handle
            while len(_cache) > OPEN_FILES_MAX:
                _, old = _cache.popitem(last=False)
                if _evict_locked(old):
                    to_close.append(old)
    _close_all(to_close)
    return handle


def _release(handle: _Handle) -> None:
    """A reader is done with ``handle``: close it if it left the cache meanwhile."""
    with _cache_lock:
        handle.users -= 1
        close = handle.evicted and handle.users == 0 and not handle.closed
        if close:
            handle.closed = True
    if close:
        _close_all([handle])


@contextlib.contextmanager
def _opened(path: str) -> Iterator[_Handle]:
    """The cached handle of ``path``, held for the duration of the ``with`` block."""
    handle = _acquire(path)
    try:
        yield handle
    finally:
        _release(handle)


def file_uuid(path: str) -> Any:
    """The ROOT UUID (``TFile::fUUID``, a :class:`uuid.UUID`) of ``path``, from the reader's
    cached handle (no new open when the file was just read or planned).

    Raises:
        InputError: the file cannot be opened.
    """
    with _opened(path) as handle:
        return handle.directory.file.uuid


def _forget(path: str) -> None:
    """Drop ``path`` from the open-file cache (after an error: the file may change)."""
    with _cache_lock:
        keys = [k for k, h in _cache.items() if h.path == path]
        to_close = [h for h in (_cache.pop(k) for k in keys) if _evict_locked(h)]
    _close_all(to_close)


def _fail(path: str, exc: Exception, what: str, corrupt: str) -> InputError:
    """The error for a failure: remote network problem (named cause) or bad data (``corrupt``)."""
    err = remote.remote_error(exc, path, what)
    if err is not None:
        return err
    return InputError(f"{corrupt} ({type(exc).__name__}: {_first_line(exc)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


#: the classes read as event trees: TTree (baskets, native decoders) and RNTuple (via uproot)
_TREE_CLASSES = ("TTree", "TNtuple", "ROOT::RNTuple")


def _is_rntuple(t: Any) -> bool:
    return isinstance(t, uproot.models.RNTuple.Model_ROOT_3a3a_RNTuple)


def _tree(handle: _Handle, tree: str) -> Any:
    """The TTree ``tree`` of an opened file.

    Raises:
        InputError: no such tree (listing the trees there are), or not a TTree.
    """
    obj = handle.trees.get(tree)
    if obj is not None:
        return obj
    path = handle.path
    try:
        classnames = handle.directory.classnames()
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, "cannot list the file's contents",
                    f"{path}: cannot list the file's contents, truncated or corrupt file?"
                    ) from exc
    names = {k.split(";")[0]: v for k, v in classnames.items()}
    if tree not in names:
        trees = sorted(k for k, v in names.items() if v in _TREE_CLASSES)
        raise InputError(f"{path}: no tree '{tree}' (trees in the file: "
                         f"{', '.join(trees) if trees else 'none'})")
    if names[tree] not in _TREE_CLASSES:
        raise InputError(f"{path}: '{tree}' is a {names[tree]}, not a TTree or RNTuple")
    try:
        obj = handle.directory[tree]
        obj.keys()
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, f"cannot read tree '{tree}'",
                    f"{path}: cannot read tree '{tree}', truncated or corrupt file?") from exc
    handle.trees[tree] = obj
    return obj


# ---------------------------------------------------------------------------------------------
# branches


def collection_of(branch: str) -> str:
    """The collection a jagged branch belongs to: the name before the first ``_``.

    Args:
        branch: e.g. ``jet_pt``.

    Returns:
        e.g. ``jet`` (the whole name when it has no ``_``).
    """
    return branch.split("_", 1)[0]


class _Plan(NamedTuple):
    """How to decode a branch: ``kind`` is scalar, jagged (native decoders) or uproot."""

    kind: str
    from_dtype: np.dtype
    to_dtype: np.dtype
    header: int


def _is_plain(interp: Any) -> bool:
    return type(interp) is uproot.AsDtype and interp.from_dtype.shape == ()


def _plan(branch: Any, path: str, tree: str) -> _Plan:
    """Classify a branch's interpretation.

    Raises:
        InputError: the branch holds neither numbers nor variable-length lists of numbers.
    """
    interp = branch.interpretation
    if _is_plain(interp):
        return _Plan("scalar", interp.from_dtype, interp.to_dtype, 0)
    if isinstance(interp, uproot.AsJagged) and _is_plain(interp.content):
        c = interp.content
        return _Plan("jagged", c.from_dtype, c.to_dtype, interp.header_bytes)
    if isinstance(interp, uproot.interpretation.Interpretation) and not isinstance(
            interp, uproot.interpretation.identify.UnknownInterpretation):
        # strings, nested vectors, RVec, truncated floats...: uproot's own interpretation
        return _Plan("uproot", np.dtype(np.float64), np.dtype(np.float64), 0)
    raise InputError(f"{path}: tree '{tree}', branch '{branch.name}' of type "
                     f"{branch.typename} cannot be interpreted by uproot ({interp})")


def _branches(t: Any, names: Sequence[str], path: str, tree: str) -> list[Any]:
    """Look up branches by name.

    Raises:
        InputError: naming the first missing branch and close matches.
    """
    out = []
    keys = list(t.keys()) if _is_rntuple(t) else None
    for name in names:
        try:
            if keys is not None and name not in keys:  # RNTuple: fields by name
                raise KeyError(name)
            out.append(t[name])
        except KeyError:
            keys = keys if keys is not None else t.keys()
            close = difflib.get_close_matches(name, keys, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"{path}: tree '{tree}' has no branch '{name}'{hint}") from None
    return out


def _check_range(path: str, tree: str, n: int, start: Any, stop: Any) -> tuple[int, int]:
    """Validate an entry range against the tree's number of entries.

    Raises:
        InputError: non-integer bounds or a range outside [0, n].
    """
    try:
        a = 0 if start is None else int(start.__index__())
        b = n if stop is None else int(stop.__index__())
    except (AttributeError, TypeError):
        raise InputError(f"{path}: entry range [{start!r}, {stop!r}) must be integers") from None
    if not 0 <= a <= b <= n:
        raise InputError(f"{path}: entry range [{a}, {b}) is out of bounds: tree '{tree}' has "
                         f"{n} entries")
    return a, b


# ---------------------------------------------------------------------------------------------
# reading


def _fetch(handle: _Handle, branches: list[Any], start: int, stop: int
           ) -> tuple[list[list[tuple[int, Any]]], dict[tuple[int, int], np.ndarray], int]:
    """Request every basket overlapping [start, stop) of ``branches`` in one source call.

    Returns:
        per branch the (basket number, byte range or embedded basket) list, the raw bytes per
        byte range, and the total compressed bytes.
    """
    items = [b.entries_to_ranges_or_baskets(start, stop) for b in branches]
    ranges = []
    nbytes = 0
    for b, its in zip(branches, items, strict=True):
        for num, r in its:
            if isinstance(r, tuple):
                ranges.append((int(r[0]), int(r[1])))
                nbytes += int(r[1]) - int(r[0])
            else:
                nbytes += int(b.basket_compressed_bytes(num))
    raw: dict[tuple[int, int], np.ndarray] = {}
    source = branches[0].file.source if ranges else None
    fsspec_source = _source_class("uproot.source.fsspec", "FSSpecSource")
    if fsspec_source is not None and isinstance(source, fsspec_source):  # remote: keep cause
        f = branches[0].file
        raw = remote.read_ranges(handle.path, ranges, _BYTE_CACHE,
                                 file_key(handle.path, int(f.fEND), f.uuid.bytes))
    elif source is not None:
        for c in source.chunks(ranges, notifications=queue.Queue()):
            data = c.raw_data
            raw[(c.start, c.stop)] = (data if isinstance(data, np.ndarray)
                                      else np.frombuffer(data, np.uint8))
    return items, raw, nbytes


def _drop_pages(source: Any, its: list[tuple[int, Any]]) -> None:
    """Give back this process's pages of a memory-mapped file's byte ranges once decoded.

    The pages of a local file's baskets count in the worker's resident memory (and in
    ``ru_maxrss``) for as long as the file stays in the open-file cache: without this, a
    worker's footprint grows with the part of the file it has read. ``MADV_DONTNEED`` on a
    read-only file mapping only unmaps them (the data stays in the page cache, a later read
    maps it again), so views into them stay valid.
    """
    mm = getattr(getattr(source, "file", None), "_mmap", None) if isinstance(
        source, _source_class("uproot.source.file", "MemmapSource") or ()) else None
    if mm is not None and not mm.closed:
        _drop_map_pages(mm, [(int(r[0]), int(r[1])) for _, r in its if isinstance(r, tuple)])


def _drop_map_pages(mm: mmap.mmap, ranges: list[tuple[int, int]]) -> None:
    """``MADV_DONTNEED`` on byte ranges of a read-only file mapping (whole pages)."""
    if not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    size = len(mm)
    for lo_b, hi_b in ranges:
        lo = lo_b // mmap.PAGESIZE * mmap.PAGESIZE
        hi = min(size, -(-hi_b // mmap.PAGESIZE) * mmap.PAGESIZE)
        if hi > lo:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def _add_offsets(offsets: dict[str, np.ndarray], owner: dict[str, str], name: str,
                 off: np.ndarray, where: str, start: int, kind: str = "branches") -> None:
    """Keep a jagged column's offsets as its collection's, or check they are the same.

    Raises:
        InputError: two columns of one collection with different multiplicities.
    """
    coll = collection_of(name)
    if coll not in offsets:
        offsets[coll], owner[coll] = off, name
    elif not np.array_equal(offsets[coll], off):
        diff = np.flatnonzero(np.diff(offsets[coll]) != np.diff(off))
        raise InputError(f"{where}: {kind} '{owner[coll]}' and '{name}' of collection "
                         f"'{coll}' have different multiplicities (first at entry "
                         f"{start + int(diff[0])})")


def _pieces(branch: Any, its: list[tuple[int, Any]], raw: dict[tuple[int, int], np.ndarray],
            start: int, stop: int) -> list[tuple[_Basket, int, int]]:
    """Decode the baskets of one branch: (basket, first local entry, stop local entry) each."""
    out = []
    for num, r in its:
        if isinstance(r, tuple):
            key = (int(r[0]), int(r[1]))
            data = raw[key]
            if len(data) != key[1] - key[0]:
                raise ValueError(f"basket {num} at bytes [{key[0]}, {key[1]}) is cut: only "
                                 f"{len(data)} bytes could be read (truncated file?)")
            basket = decode_basket(data)
        else:  # embedded basket (file not closed properly), decoded by uproot
            bo = r.byte_offsets
            basket = _Basket(r.data, None if bo is None else bo.astype(np.int64), r.num_entries)
        b0, b1 = (int(x) for x in branch.basket_entry_start_stop(num))
        if basket.num_entries != b1 - b0:
            raise ValueError(f"basket {num} holds {basket.num_entries} entries, the branch "
                             f"metadata says {b1 - b0}")
        out.append((basket, max(start, b0) - b0, min(stop, b1) - b0))
    return out


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


def _numeric(arr: Any) -> np.ndarray | None:
    """A flat awkward array of numbers as an owned contiguous numpy array, else None."""
    import awkward as ak

    try:
        out = ak.to_numpy(arr)
    except (ValueError, TypeError):
        return None
    if out.dtype.kind not in "biuf" or out.ndim != 1:
        return None
    return np.array(out, copy=True, order="C")  # never a view of a file's memory map


def _read_with_uproot(branch: Any, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a branch with uproot's own interpretation: (flat content, offsets or None).

    Numbers and lists of numbers come back as for the native decoders; anything else uproot
    reads (strings, nested vectors, ...) as one Python object per event (``dtype=object``,
    no offsets).
    """
    return _from_awkward(branch.array(entry_start=start, entry_stop=stop, library="ak",
                                      array_cache=None))


def _from_awkward(arr: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """An awkward array of one branch or field as (flat content, offsets or None)."""
    import awkward as ak

    if arr.ndim == 1:
        flat = _numeric(arr)
        if flat is not None:
            return flat, None
    elif arr.ndim == 2:
        content = _numeric(ak.flatten(arr, axis=1))
        if content is not None:
            offsets = np.zeros(len(arr) + 1, np.int64)
            np.cumsum(ak.to_numpy(ak.num(arr, axis=1)), out=offsets[1:])
            return content, offsets
    out = np.empty(len(arr), dtype=object)
    for i, value in enumerate(arr.to_list()):
        out[i] = value
    return out, None


# ---------------------------------------------------------------------------------------------
# file layouts: reading a planned local file without parsing its TTree again

#: version of :func:`file_layout`'s records
LAYOUT_VERSION = 1


def _file_key(local: str) -> list[int]:
    st = os.stat(local)
    return [int(st.st_size), int(st.st_mtime_ns)]


def file_layout(path: str | os.PathLike[str], branches: Iterable[str], tree: str = "events"
                ) -> dict[str, Any] | None:
    """Where the baskets of ``branches`` are in a file: what :func:`read_chunk` needs to
    read it without uproot parsing the file's TTree (~25 ms for the AGC's ~50 branches of a
    local file, several round trips for a remote one; the planner records it once, the
    workers then skip it for every chunk).

    Returns:
        A JSON-ready record (the file's identity: size and modification time of a local file,
        fEND and ROOT UUID of a remote one; the tree's entries, per branch its decoding plan,
        basket entry boundaries and byte ranges), or None where it does not apply: RNTuple,
        embedded baskets, types the native decoders do not read.

    Raises:
        InputError: the file, tree or a branch cannot be read (as :func:`read_chunk`).
    """
    path = os.fspath(path)
    local = _local_path(path)
    names = list(dict.fromkeys(branches))
    with _opened(path) as handle:
        if local is not None:
            ident: list[Any] = _file_key(local)
        else:
            f = handle.directory.file
            ident = [int(f.fEND), f.uuid.hex]
        t = _tree(handle, tree)
        if _is_rntuple(t):
            return None
        out: dict[str, Any] = {}
        for name, b in zip(names, _branches(t, names, path, tree), strict=True):
            plan = _plan(b, path, tree)
            if plan.kind not in ("scalar", "jagged"):
                return None
            its = b.entries_to_ranges_or_baskets(0, t.num_entries)
            if any(not isinstance(r, tuple) for _, r in its):
                return None
            edges = [int(b.basket_entry_start_stop(num)[0]) for num, _ in its]
            edges.append(int(b.basket_entry_start_stop(its[-1][0])[1]) if its else 0)
            out[name] = {"name": b.name, "kind": plan.kind, "from": plan.from_dtype.str,
                         "to": plan.to_dtype.str, "header": int(plan.header), "entries": edges,
                         "ranges": [[int(r[0]), int(r[1])] for _, r in its]}
        return {"version": LAYOUT_VERSION, "file": ident, "remote": local is None,
                "tree": tree, "num_entries": int(t.num_entries), "branches": out}


class _StaleLayout(Exception):
    """A layout that does not describe the file (changed since) or the request."""


def _basket_key_name(raw: np.ndarray) -> bytes:
    """The ``fName`` of a basket's TKey (the branch's name, as ROOT and uproot write it)."""
    version = _KEY.unpack(raw[:_KEY.size].tobytes())[1]
    pos = _KEY.size + (16 if version > 1000 else 8)  # fSeekKey, fSeekPdir
    for _ in range(2):  # fClassName, then fName
        n = int(raw[pos])
        pos += 1
        if n == 255:
            n = int.from_bytes(raw[pos:pos + 4].tobytes(), "big")
            pos += 4
        value, pos = raw[pos:pos + n].tobytes(), pos + n
    return value


def _layout_baskets(layout: dict[str, Any], names: list[str], a: int, b: int
                    ) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per branch the baskets of entries [a, b) in a :func:`file_layout` record:
    (first entry, stop entry, byte start, byte stop) each."""
    recs = layout["branches"]
    out = {}
    for name in names:
        rec = recs[name]
        edges = rec["entries"]
        first = max(0, bisect.bisect_right(edges, a) - 1)
        found = []
        for k in range(first, len(edges) - 1 if b > a else first):
            e0, e1 = int(edges[k]), int(edges[k + 1])
            if e0 >= b:
                break
            if e1 <= a:
                continue
            lo, hi = rec["ranges"][k]
            found.append((e0, e1, int(lo), int(hi)))
        out[name] = found
    return out


def layout_byte_ranges(layout: dict[str, Any], branches: Iterable[str], entry_start: int,
                       entry_stop: int) -> list[tuple[int, int]]:
    """The byte ranges of the baskets that :func:`read_chunk` reads for entries
    [entry_start, entry_stop) of a file with this :func:`file_layout` (what a read-ahead
    fetches)."""
    baskets = _layout_baskets(layout, list(dict.fromkeys(branches)), entry_start, entry_stop)
    return sorted({(lo, hi) for found in baskets.values() for _, _, lo, hi in found})


def layout_cache_key(path: str, layout: dict[str, Any]) -> str | None:
    """The byte-cache key of a remote file described by ``layout`` (None for a local one)."""
    if not layout.get("remote"):
        return None
    size, uuid_hex = layout["file"]
    return file_key(path, int(size), bytes.fromhex(uuid_hex))


def _read_laid_out(path: str, layout: dict[str, Any], names: list[str], start: Any,
                   stop: Any, tree: str) -> Chunk:
    """:func:`read_chunk` from a :func:`file_layout` record: the baskets straight from a
    memory map of a local file, or fetched at once (through the byte cache) for a remote one,
    decoded as :func:`_read` decodes them.

    Raises:
        _StaleLayout: the layout does not fit (the caller reads the file the usual way).
        ValueError: a basket does not decode (idem: the usual path reports it, or uproot
            reads it).
        InputError: a remote file could not be read (network; named, transient ones retried).
    """
    local = _local_path(path)
    recs = layout.get("branches", {})
    is_remote = bool(layout.get("remote"))
    if (layout.get("version") != LAYOUT_VERSION or layout.get("tree") != tree
            or any(n not in recs for n in names) or is_remote != (local is None)
            or (local is not None and _file_key(local) != layout.get("file"))):
        raise _StaleLayout
    n_entries = int(layout["num_entries"])
    a, b = _check_range(path, tree, n_entries, start, stop)
    n = b - a
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    nbytes = 0
    where = f"{path}: tree '{tree}', entries [{a}, {b})"
    baskets = _layout_baskets(layout, names, a, b)
    mm = None
    if is_remote:
        wanted = sorted({(lo, hi) for found in baskets.values() for _, _, lo, hi in found})
        raw = remote.read_ranges(path, wanted, _BYTE_CACHE, layout_cache_key(path, layout))
        size = int(layout["file"][0])

        def take(lo: int, hi: int) -> np.ndarray:
            return raw[(lo, hi)]
    else:
        assert local is not None
        with open(local, "rb") as fh:
            # closed when the last view of it goes (the columns are copies: none escapes)
            mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = np.frombuffer(mm, np.uint8)
        size = len(mm)

        def take(lo: int, hi: int) -> np.ndarray:
            return view[lo:hi]
    try:
        for name in names:
            rec = recs[name]
            plan = _Plan(rec["kind"], np.dtype(rec["from"]), np.dtype(rec["to"]),
                         int(rec["header"]))
            key_name = str(rec["name"]).encode()
            pieces = []
            used = []
            for e0, e1, lo, hi in baskets[name]:
                data = take(lo, hi)
                if hi > size or len(data) != hi - lo or _basket_key_name(data) != key_name:
                    raise _StaleLayout  # not this branch's basket: not this file's layout
                basket = decode_basket(data)
                if basket.num_entries != e1 - e0:
                    raise ValueError(f"basket holds {basket.num_entries} entries, the "
                                     f"layout says {e1 - e0}")
                pieces.append((basket, max(a, e0) - e0, min(b, e1) - e0))
                used.append((lo, hi))
                nbytes += hi - lo
            if plan.kind == "scalar":
                columns[name], off = _read_scalar(pieces, plan, n), None
            else:
                columns[name], off = _read_jagged(pieces, plan, n, a)
            if mm is not None:
                _drop_map_pages(mm, used)
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, a)
    except _NeedsUproot:
        raise _StaleLayout from None
    return Chunk(n, a, b, columns, offsets, nbytes)


def read_chunk(path: str | os.PathLike[str], branches: Iterable[str], entry_start: int = 0,
               entry_stop: int | None = None, tree: str = "events",
               layout: dict[str, Any] | None = None) -> Chunk:
    """Read branches of one entry range of a file into flat arrays plus per-collection offsets.

    Works for any local path or URL uproot opens, for ``std::vector<T>`` branches written by
    ROOT (AGC ntuples) and for ``T[]`` leaves with a counter written by uproot alike. Baskets
    are fetched in one request, decompressed straight into numpy buffers and copied once into
    the output (converting big-endian to native); no awkward arrays or Python objects per event.

    Args:
        path: local file path or URL (``https://``, ``root://``).
        branches: branch names, e.g. ``cfg.analysis_branches``.
        entry_start: first entry to read.
        entry_stop: one past the last entry; None reads to the end.
        tree: the TTree name.
        layout: the file's :func:`file_layout` (from planning): read without parsing the
            TTree when it still describes the file, else (changed file, a basket that does
            not decode) the usual way, with its messages.

    Returns:
        The :class:`Chunk`.

    Raises:
        InputError: missing or unreadable file, truncated or corrupt file, missing tree or branch,
            entry range out of bounds, inconsistent multiplicities within a collection. Each
            message names the file (and tree, branch, entry range where they matter).
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    if layout is not None:
        try:
            return _read_laid_out(path, layout, names, entry_start, entry_stop, tree)
        except (MemoryError, InputError):  # a network problem is named as it is (retried)
            raise
        except Exception:  # stale, or a bad basket: the usual path reads it, or names it
            pass
    with _opened(path) as handle:
        return _read(handle, path, names, entry_start, entry_stop, tree)


def _read(handle: _Handle, path: str, names: list[str], entry_start: Any, entry_stop: Any,
          tree: str) -> Chunk:
    """:func:`read_chunk` on a held handle."""
    t = _tree(handle, tree)
    start, stop = _check_range(path, tree, t.num_entries, entry_start, entry_stop)
    objs = _branches(t, names, path, tree)
    if _is_rntuple(t):
        return _read_rntuple(t, path, names, start, stop, tree)
    plans = [_plan(b, path, tree) for b in objs]
    n = stop - start
    where = f"{path}: tree '{tree}', entries [{start}, {stop})"
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    current = ""
    try:
        if n == 0:
            items, raw, nbytes = [[] for _ in objs], {}, 0
        else:
            items, raw, nbytes = _fetch(handle, objs, start, stop)
        for name, b, plan, its in zip(names, objs, plans, items, strict=True):
            current = f", branch '{name}'"
            columns[name], off = _read_branch(b, plan, its, raw, start, stop, where)
            _drop_pages(b.file.source, its)
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, start)
    except (InputError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, f"tree '{tree}', entries [{start}, {stop}){current}: cannot read",
                    f"{where}{current}: cannot read, truncated or corrupt file?") from exc
    return Chunk(n, start, stop, columns, offsets, nbytes)


def _read_rntuple(t: Any, path: str, names: list[str], start: int, stop: int, tree: str
                  ) -> Chunk:
    """:func:`read_chunk` of an RNTuple: uproot reads the fields, we flatten them.

    ``bytes_read`` is 0: uproot does not say which pages it fetched.
    """
    where = f"{path}: RNTuple '{tree}', entries [{start}, {stop})"
    columns: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    owner: dict[str, str] = {}
    try:
        arrays = t.arrays(names, entry_start=start, entry_stop=stop) if names else {}
        for name in names:
            columns[name], off = _from_awkward(arrays[name])
            if off is not None:
                _add_offsets(offsets, owner, name, off, where, start, "fields")
    except (InputError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        _forget(path)
        raise _fail(path, exc, f"RNTuple '{tree}', entries [{start}, {stop}): cannot read",
                    f"{where}: cannot read, truncated or corrupt file?") from exc
    return Chunk(stop - start, start, stop, columns, offsets, 0)


def _read_branch(b: Any, plan: _Plan, its: list[tuple[int, Any]],
                 raw: dict[tuple[int, int], np.ndarray], start: int, stop: int, where: str
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """One branch's (content, offsets or None): native decoders, else uproot's own reading.

    A decoding problem of the native decoders (a layout they misparse) is retried with uproot
    before the data is called corrupt; only when uproot fails too is the native error raised.
    """
    if plan.kind == "uproot":
        return _read_with_uproot(b, start, stop)
    n = stop - start
    try:
        pieces = _pieces(b, its, raw, start, stop)
        if plan.kind == "scalar":
            return _read_scalar(pieces, plan, n), None
        return _read_jagged(pieces, plan, n, start)
    except _NeedsUproot:
        return _read_with_uproot(b, start, stop)
    except (ValueError, IndexError, TypeError, struct.error) as native:
        try:
            out = _read_with_uproot(b, start, stop)
        except Exception:
            raise native from None
        log.warning("%s, branch '%s': the native decoder failed (%s: %s); read with uproot",
                    where, b.name, type(native).__name__, _first_line(native))
        return out


def num_entries(path: str | os.PathLike[str], tree: str = "events") -> int:
    """Number of entries of a file's tree.

    Args:
        path: local file path or URL.
        tree: the TTree name.

    Returns:
        The number of entries.

    Raises:
        InputError: missing, unreadable, truncated file or missing tree.
    """
    path = os.fspath(path)
    with _opened(path) as handle:
        return int(_tree(handle, tree).num_entries)


def check_file(path: str | os.PathLike[str], branches: Iterable[str] = (),
               tree: str = "events") -> FileInfo:
    """Check once that a file can be read: it opens, has the tree, the branches, readable types.

    Args:
        path: local file path or URL.
        branches: the branches that will be read.
        tree: the TTree name.

    Returns:
        The :class:`FileInfo` (entries, branch names, compressed size of ``branches``).

    Raises:
        InputError: missing, unreadable or truncated file, missing tree, missing branch or a
            branch that is not numeric.
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    with _opened(path) as handle:
        t = _tree(handle, tree)
        objs = _branches(t, names, path, tree)
        if _is_rntuple(t):  # uproot reads every field type it knows; sizes not summed
            return FileInfo(path, tree, int(t.num_entries), tuple(t.keys()), 0)
        for b in objs:
            _plan(b, path, tree)
        return FileInfo(path, tree, int(t.num_entries), tuple(t.keys()),
                        int(sum(int(b.compressed_bytes) for b in objs)))


def chunk_ranges(path: str | os.PathLike[str], branches: Iterable[str], step: int,
                 tree: str = "events") -> list[tuple[int, int]]:
    """Split a file's entries into chunks of about ``step`` that end on basket boundaries.

    A chunk ends at the first entry >= ``start + step`` where every one of ``branches`` starts a
    new basket, so no basket is decompressed twice; when the next such boundary lies beyond
    ``start + 2 * step`` the chunk is cut at ``start + step`` instead (bounded memory).

    Args:
        path: local file path or URL.
        branches: the branches that will be read.
        step: target number of entries per chunk (>= 1).
        tree: the TTree name.

    Returns:
        (entry_start, entry_stop) pairs covering all entries in order; empty for an empty tree.

    Raises:
        InputError: as :func:`check_file`.
        ConfigError: ``step`` < 1.
    """
    if step < 1:
        raise ConfigError(f"chunk size must be a positive number of entries, got {step}")
    path = os.fspath(path)
    with _opened(path) as handle:
        t = _tree(handle, tree)
        n = int(t.num_entries)
        common: set[int] | None = None
        objs = _branches(t, list(dict.fromkeys(branches)), path, tree)
        if _is_rntuple(t):  # clusters instead of baskets
            common = {int(c.num_first_entry) for c in t.cluster_summaries}
            objs = []
        for b in objs:
            edges = {int(x) for x in b.entry_offsets}
            common = edges if common is None else common & edges
    bounds = sorted(x for x in (common or set()) if 0 < x < n)
    out = []
    start = 0
    i = 0
    while start < n:
        while i < len(bounds) and bounds[i] < start + step:
            i += 1
        stop = bounds[i] if i < len(bounds) else n
        if stop > start + 2 * step:
            stop = start + step
        out.append((start, stop))
        start = stop
    return out


def branch_set(cfg: AnalysisConfig, name_or_percent: str | int) -> tuple[str, ...]:
    """The branches to read: the analysis set or an AGC I/O benchmark set.

    Args:
        cfg: the analysis configuration.
        name_or_percent: ``"analysis"``, or a percentage of ``cfg.io_branch_sets``
            (``4``, ``"15"``, ``"25%"``, ...).

    Returns:
        The branch names.

    Raises:
        ConfigError: unknown set.
    """
    if isinstance(name_or_percent, str) and name_or_percent.strip().lower() == "analysis":
        return tuple(cfg.analysis_branches)
    text = str(name_or_percent).strip().rstrip("%")
    if text.isdigit() and int(text) in cfg.io_branch_sets:
        return tuple(cfg.io_branch_sets[int(text)])
    choices = ", ".join(["analysis", *(str(k) for k in sorted(cfg.io_branch_sets))])
    raise ConfigError(f"unknown branch set {name_or_percent!r} (choose from {choices}; "
                      f"see io_branch_sets in {cfg.path})")


# ---------------------------------------------------------------------------------------------
# benchmark


def _read_uproot_ak(path: str, branches: list[str], ranges: list[tuple[int, int]],
                    tree: str) -> None:
    """Plain uproot: open the file and read the branches into awkward arrays."""
    with uproot.open(path) as f:
        t = f[tree]
        for a, b in ranges:
            t.arrays(branches, entry_start=a, entry_stop=b, library="ak")


def _read_agc(path: str, branches: list[str], ranges: list[tuple[int, int]], tree: str) -> int:
    """Our reader, from a closed file as uproot starts; returns the compressed bytes read."""
    close_files()
    return sum(read_chunk(path, branches, a, b, tree).bytes_read for a, b in ranges)


def benchmark_read(path: str, branches: Sequence[str], repeats: int = 5, tree: str = "events",
                   step: int | None = None) -> dict[str, Any]:
    """Time :func:`read_chunk` against plain uproot (``library="ak"``) on the same branches.

    Both read the whole file (in chunks of ``step`` entries if given, aligned to baskets by
    :func:`chunk_ranges`), opening it anew on every repeat, in this process (one core; uproot's
    default source may use a helper thread for I/O, counted in its CPU time). Runs alternate
    between the two readers after one warm-up each (warm page cache).

    Args:
        path: the ROOT file.
        branches: branches to read, e.g. ``branch_set(cfg, "analysis")``.
        repeats: timed runs per reader (the best and the median are reported).
        tree: the TTree name.
        step: entries per chunk; None reads the file in one chunk.

    Returns:
        ``{"path", "tree", "branches", "n_events", "compressed_bytes", "uncompressed_bytes",
        "zlib_backend", "repeats", "agc_core": stats, "uproot_ak": stats, "speedup"}`` where
        stats = ``{"best_s", "median_s", "cpu_s", "events_per_s", "mb_per_s",
        "events_per_cpu_s", "mb_per_cpu_s"}`` (rates from the best wall time, and from the best
        process CPU time, which a busy machine disturbs less; MB = compressed MB read) and
        speedup = agc_core / uproot_ak events per second (wall).

    Raises:
        InputError: as :func:`read_chunk`.
    """
    path = os.fspath(path)
    names = list(dict.fromkeys(branches))
    n = num_entries(path, tree)
    ranges = chunk_ranges(path, names, step, tree) if step else [(0, n)]
    whole = read_chunk(path, names, 0, n, tree)
    uncompressed = sum(a.nbytes for a in whole.columns.values())
    uncompressed += sum(a.nbytes for a in whole.offsets.values())
    del whole
    runners: dict[str, Callable[[], Any]] = {
        "agc_core": lambda: _read_agc(path, names, ranges, tree),
        "uproot_ak": lambda: _read_uproot_ak(path, names, ranges, tree),
    }
    times: dict[str, list[float]] = {k: [] for k in runners}
    cpus: dict[str, list[float]] = {k: [] for k in runners}
    nbytes = 0
    for k, run in runners.items():  # warm-up (page cache, numba compilation)
        res = run()
        if k == "agc_core":
            nbytes = int(res)
    for _ in range(max(1, repeats)):
        for k, run in runners.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)

    def stats(k: str) -> dict[str, float]:
        best, cpu = min(times[k]), min(cpus[k])
        return {"best_s": best, "median_s": statistics.median(times[k]), "cpu_s": cpu,
                "events_per_s": n / best, "mb_per_s": nbytes / best / 1e6,
                "events_per_cpu_s": n / cpu, "mb_per_cpu_s": nbytes / cpu / 1e6}

    result = {"path": path, "tree": tree, "branches": names, "n_events": n,
              "compressed_bytes": nbytes, "uncompressed_bytes": int(uncompressed),
              "zlib_backend": zlib_backend(), "repeats": repeats,
              "agc_core": stats("agc_core"), "uproot_ak": stats("uproot_ak")}
    result["speedup"] = result["agc_core"]["events_per_s"] / result["uproot_ak"]["events_per_s"]
    log.info("read %s: agc_core %.0f ev/s (%.1f MB/s), uproot ak %.0f ev/s (%.1f MB/s)", path,
             result["agc_core"]["events_per_s"], result["agc_core"]["mb_per_s"],
             result["uproot_ak"]["events_per_s"], result["uproot_ak"]["mb_per_s"])
    return result
