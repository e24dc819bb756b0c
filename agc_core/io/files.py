"""Opening files: the per-process cache of opened files (safe under threads and forks), the
checks of a local file before it is opened, a file's event tree, and the errors naming a file.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

from agc_core.errors import InputError
from agc_core.fileset import is_url
from agc_core.io import remote
from agc_core.lazyimport import LazyModule

uproot: Any = LazyModule("uproot")  # a worker reading planned files never imports it
#: the uproot source class of local files (None: its ``MemmapSource``)
LOCAL_SOURCE: type | None = None


def _source_class(module: str, name: str) -> type | None:
    """An uproot source class if uproot has loaded it (else no object can be one of them)."""
    mod = sys.modules.get(module)
    return getattr(mod, name, None) if mod is not None else None


#: how many opened files each process keeps (opening costs ~4-10 ms, a chunk ~10-100 ms)
OPEN_FILES_MAX = 8


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
            :class:`agc_core.io.remote.TransientInputError`, retried by the executors).
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
            from agc_core.io import source

            if source.is_prefetched(path):  # planning: its metadata held in memory
                directory = uproot.open(path, array_cache=None, handler=source.PrefetchedSource)
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
# the pages of memory-mapped files


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
