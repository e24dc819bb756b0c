"""The local cache of remote inputs: fetched byte ranges and plans, as an XCache for one user.

Remote files (``https://``, ``http://``, ``root://``) are read again on every run; this keeps
what was fetched in the user's cache folder (``$AGC_CORE_CACHE``, else ``~/.cache/agc-core``):

- ``bytes/``: byte ranges of remote files, one file per range, keyed by the remote file's
  identity (:func:`file_key`: URL, size and ROOT UUID) and the range. Each entry carries its
  length and an xxh3 digest of its content: a truncated or corrupt entry is detected on read,
  deleted and fetched again, never used. A remote file that changed has another size or UUID,
  hence another key: its old entries are never used for it. Written atomically (a temporary
  file renamed into place), so concurrent workers and runs never see half an entry. Bounded in
  size (:data:`DEFAULT_MAX_BYTES`, ``$AGC_CORE_CACHE_SIZE``): the least recently used go first.
- ``plans/``: per remote or local file, its entries, chunk ranges and basket layout
  (:class:`agc_core.planning.EntriesCache` keeps them there).

The reader reads a process's remote files through the cache set by :func:`set_byte_cache`
(None: straight from the network).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import uuid as uuid_mod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from agc_core.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_ENV = "AGC_CORE_CACHE"
CACHE_SIZE_ENV = "AGC_CORE_CACHE_SIZE"
#: the byte cache's default bound (bytes)
DEFAULT_MAX_BYTES = 20 * 1000**3
BYTES_DIR = "bytes"
PLANS_DIR = "plans"

_MAGIC = b"AGCB"
_HEADER = struct.Struct("<4sHxxqQ")  # magic, version, length, xxh3_64 of the content
_VERSION = 1


def default_dir() -> Path:
    """The cache folder: ``$AGC_CORE_CACHE``, else ``$XDG_CACHE_HOME/agc-core`` or
    ``~/.cache/agc-core``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "agc-core"


def format_bytes(n: float) -> str:
    """Bytes in decimal units: ``3.44 TB``, ``12.3 MB``, ``512 B``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


def cache_folder(folder: str | os.PathLike[str] | None = None) -> Path:
    """``folder`` if given, else :func:`default_dir`."""
    return Path(folder).expanduser() if folder is not None else default_dir()


def parse_size(text: str | int | None) -> int | None:
    """A size such as ``20GB``, ``500 MB``, ``1.5e9`` or ``0`` in bytes (None stays None).

    Raises:
        ConfigError: not a size.
    """
    if text is None or isinstance(text, int):
        return text
    t = str(text).strip().upper().replace(" ", "").removesuffix("B")
    scale = 1
    for suffix, s in (("K", 1000), ("M", 1000**2), ("G", 1000**3), ("T", 1000**4)):
        if t.endswith(suffix):
            t, scale = t[:-1], s
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise ConfigError(f"cache size {text!r} is not a size (e.g. 20GB, 500MB)") from None
    if value < 0:
        raise ConfigError(f"cache size must not be negative, got {text!r}")
    return int(value)


def default_max_bytes() -> int:
    """The byte cache's bound: ``$AGC_CORE_CACHE_SIZE`` or :data:`DEFAULT_MAX_BYTES`."""
    env = os.environ.get(CACHE_SIZE_ENV)
    if env:
        size = parse_size(env)
        assert size is not None
        return size
    return DEFAULT_MAX_BYTES


def file_key(url: str, size: int, uuid: uuid_mod.UUID | bytes | str) -> str:
    """A remote file's identity as a cache key: a digest of its URL, size and ROOT UUID."""
    u = uuid if isinstance(uuid, bytes) else (uuid.bytes if isinstance(uuid, uuid_mod.UUID)
                                              else str(uuid).encode())
    h = hashlib.blake2b(digest_size=16)
    h.update(url.encode())
    h.update(b"\0")
    h.update(str(int(size)).encode())
    h.update(b"\0")
    h.update(u)
    return h.hexdigest()


@dataclass
class CacheStats:
    """What one process's cache did: hits, misses, corrupt entries found, bytes each way."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    bytes_from_cache: int = 0
    #: of bytes_from_cache, those of entries written since the cache's ``since`` (this run's
    #: read-ahead fetched them: they came from the network, not from an earlier run)
    bytes_fresh: int = 0
    bytes_written: int = 0


@dataclass(frozen=True)
class CacheSummary:
    """What the byte cache holds: entries, bytes, remote files, its bound and folder."""

    folder: Path
    entries: int
    bytes: int
    files: int
    max_bytes: int
    plans: int

    def describe(self) -> str:
        """A few lines for the ``cache`` command."""
        return (f"cache folder : {self.folder}\n"
                f"byte ranges  : {self.entries:,} from {self.files:,} remote files, "
                f"{format_bytes(self.bytes)} of {format_bytes(self.max_bytes)} "
                f"({100 * self.bytes / self.max_bytes if self.max_bytes else 0:.1f} %)\n"
                f"plans        : {self.plans:,} files")


class ByteCache:
    """Byte ranges of remote files on local disk (see the module's docstring).

    An entry's modification time is when it was written, its access time when it was last
    used (set explicitly on every hit; :meth:`trim` goes by it).

    Args:
        folder: the cache folder (its ``bytes/`` subfolder holds the ranges).
        max_bytes: the bound; :meth:`trim` removes the least recently used beyond it.
        since: entries written at or after this time (``time.time()``) count as fresh in
            :attr:`stats` (a run's own read-ahead wrote them).
    """

    def __init__(self, folder: str | os.PathLike[str], max_bytes: int | None = None,
                 since: float | None = None) -> None:
        self.since = since
        self.folder = Path(folder)
        self.root = self.folder / BYTES_DIR
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._listing: dict[str, list[tuple[int, int]]] = {}

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def _name(start: int, stop: int) -> str:
        return f"{start}-{stop}"

    def _spans(self, key: str) -> list[tuple[int, int]]:
        """The ranges stored for a file (listed once per process, then kept up to date)."""
        with self._lock:
            spans = self._listing.get(key)
            if spans is not None:
                return spans
        found = []
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir(key)):
                a, sep, b = name.partition("-")
                if sep and a.isdigit() and b.isdigit():
                    found.append((int(a), int(b)))
        with self._lock:
            self._listing[key] = found
        return found

    def has(self, key: str, start: int, stop: int) -> bool:
        """Whether an entry holds [start, stop) of the file ``key`` (not read nor verified:
        :meth:`get` does that when it is used)."""
        return any(a <= start and stop <= b for a, b in self._spans(key))

    def get(self, key: str, start: int, stop: int) -> np.ndarray | None:
        """The bytes [start, stop) of the file ``key``, or None (not cached, or a bad entry:
        deleted, so that it is fetched again).

        An entry holding a larger range that contains [start, stop) serves it too.
        """
        for a, b in [(start, stop)] + [s for s in self._spans(key)
                                        if s[0] <= start and stop <= s[1] and s != (start, stop)]:
            found = self._read_entry(key, a, b)
            if found is not None:
                data, written = found
                with self._lock:
                    self.stats.hits += 1
                    self.stats.bytes_from_cache += stop - start
                    if self.since is not None and written >= self.since:
                        self.stats.bytes_fresh += stop - start
                return data[start - a:stop - a]
        with self._lock:
            self.stats.misses += 1
        return None

    def _read_entry(self, key: str, a: int, b: int) -> tuple[np.ndarray, float] | None:
        """(the verified content, when it was written) of an entry, None if absent or bad."""
        path = self._dir(key) / self._name(a, b)
        mapped = None
        try:  # mapped, not read: no copy, and no fresh pages to fault in (a third of a
            with open(path, "rb") as fh:  # CPU-second per run's 222 MB on a VM)
                written = os.fstat(fh.fileno()).st_mtime
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped: a bad entry
            pass
        except OSError:
            return None
        ok = mapped is not None and len(mapped) >= _HEADER.size
        if ok:
            assert mapped is not None
            magic, version, length, digest = _HEADER.unpack(mapped[:_HEADER.size])
            with memoryview(mapped) as view:
                ok = (magic == _MAGIC and version == _VERSION and length == b - a
                      and len(view) - _HEADER.size == length
                      and xxhash.xxh3_64_intdigest(view[_HEADER.size:]) == digest)
        if not ok:
            if mapped is not None:
                mapped.close()
            log.warning("byte cache: corrupt entry %s (truncated or changed): removed, the "
                        "range is fetched again", path)
            with self._lock:
                self.stats.corrupt += 1
                spans = self._listing.get(key)
                if spans is not None and (a, b) in spans:
                    spans.remove((a, b))
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        with contextlib.suppress(OSError):
            os.utime(path, (time.time(), written))  # used now (trim: least recently used first)
        assert mapped is not None
        return np.frombuffer(mapped, np.uint8, offset=_HEADER.size), written  # keeps the map

    def put(self, key: str, start: int, stop: int, data: bytes | np.ndarray) -> None:
        """Store the bytes [start, stop) of the file ``key`` (atomically; errors only logged:
        a cache that cannot be written must not fail a run)."""
        buf = memoryview(np.ascontiguousarray(np.frombuffer(data, np.uint8))
                         if not isinstance(data, bytes) else data)
        if len(buf) != stop - start:
            return  # a short answer (end of file): not a full entry
        folder = self._dir(key)
        path = folder / self._name(start, stop)
        tmp = folder / f".{self._name(start, stop)}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(_HEADER.pack(_MAGIC, _VERSION, len(buf), xxhash.xxh3_64_intdigest(buf)))
                fh.write(buf)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("byte cache: cannot write %s: %s", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            self.stats.bytes_written += len(buf)
            spans = self._listing.get(key)
            if spans is not None and (start, stop) not in spans:
                spans.append((start, stop))

    def entries(self) -> Iterable[tuple[Path, int, float]]:
        """Every entry: (path, size on disk, last use: its access or modification time)."""
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for fdir in sub.iterdir():
                with contextlib.suppress(OSError):
                    for entry in os.scandir(fdir):
                        if entry.name.startswith("."):
                            # a temporary file of a writer that died long ago
                            st = entry.stat()
                            if time.time() - st.st_mtime > 3600:
                                with contextlib.suppress(OSError):
                                    os.unlink(entry.path)
                            continue
                        st = entry.stat()
                        yield Path(entry.path), st.st_size, max(st.st_atime, st.st_mtime)

    def trim(self, max_bytes: int | None = None) -> int:
        """Remove the least recently used entries until the cache holds at most ``max_bytes``
        (default: its bound). Returns the bytes removed."""
        bound = self.max_bytes if max_bytes is None else max_bytes
        items = list(self.entries())
        total = sum(s for _, s, _ in items)
        removed = 0
        if total <= bound:
            return 0
        for path, size, _ in sorted(items, key=lambda e: e[2]):
            if total - removed <= bound:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                removed += size
        with self._lock:
            self._listing.clear()
        for sub in list(self.root.iterdir()):
            for fdir in list(sub.iterdir()) if sub.is_dir() else []:
                with contextlib.suppress(OSError):
                    fdir.rmdir()  # only when empty
        return removed

    def summary(self) -> CacheSummary:
        """What the cache holds now."""
        items = list(self.entries())
        files = {p.parent.name for p, _, _ in items}
        plans_dir = self.folder / PLANS_DIR
        plans = sum(1 for _ in plans_dir.glob("*/*.json")) if plans_dir.is_dir() else 0
        return CacheSummary(self.folder, len(items), sum(s for _, s, _ in items), len(files),
                            self.max_bytes, plans)

    def clear(self, plans: bool = True) -> int:
        """Remove every entry (and the plans); returns the bytes removed."""
        removed = sum(s for _, s, _ in self.entries())
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)
        if plans:
            shutil.rmtree(self.folder / PLANS_DIR, ignore_errors=True)
        with self._lock:
            self._listing.clear()
        return removed


# ---------------------------------------------------------------------------------------------
# the byte cache of this process

#: the byte cache remote reads go through in this process (None: none), see set_byte_cache
_BYTE_CACHE: ByteCache | None = None


def set_byte_cache(cache: ByteCache | None) -> None:
    """Read remote files of this process through ``cache`` (None: straight from the network)."""
    global _BYTE_CACHE
    _BYTE_CACHE = cache


def byte_cache() -> ByteCache | None:
    """The byte cache in use by this process (:func:`set_byte_cache`)."""
    return _BYTE_CACHE
