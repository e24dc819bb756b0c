"""Columnar reader: branches of one ROOT file's entry range into flat numpy arrays plus offsets.

One module per responsibility:

- ``reader``: :func:`read_chunk` and what planning asks of a file (:func:`num_entries`,
  :func:`check_file`, :func:`chunk_ranges`), :func:`branch_set`
- ``chunk``: what it returns (:class:`Chunk`, :class:`FileInfo`)
- ``baskets``: decompression and basket decoding into flat arrays (numba)
- ``branches``: branches by name, their collections and decoding plans, entry ranges
- ``files``: the per-process cache of opened files, local-file checks, a file's tree
- ``fallback``: uproot's own reading (types the native decoders do not read, RNTuple)
- ``layout``: basket layouts recorded by planning, and reading a chunk from one
- ``remote``: remote inputs (timeouts, fetches, probes, error causes); ``cache``: the byte
  cache on disk; ``prefetch``: the read-ahead of remote chunks
- ``bench``: :func:`benchmark_read`, against plain uproot

The names below load their module on first use (``import agc_core.io.remote`` stays cheap: no
numba). A setting lives in its module and is read there at call time: set
``agc_core.io.files.OPEN_FILES_MAX`` or ``LOCAL_SOURCE`` there (reading ``io.OPEN_FILES_MAX``
gives its current value); the byte cache through :func:`set_byte_cache`.
"""

#: the public names and the modules that define them
_API = {
    "read_chunk": "reader",
    "num_entries": "reader",
    "check_file": "reader",
    "chunk_ranges": "reader",
    "branch_set": "reader",
    "Chunk": "chunk",
    "FileInfo": "chunk",
    "collection_of": "branches",
    "decode_basket": "baskets",
    "decompress_into": "baskets",
    "zlib_backend": "baskets",
    "ZLIB_BACKENDS": "baskets",
    "close_files": "files",
    "open_files": "files",
    "check_local_file": "files",
    "file_uuid": "files",
    "OPEN_FILES_MAX": "files",
    "LOCAL_SOURCE": "files",
    "file_layout": "layout",
    "layout_byte_ranges": "layout",
    "layout_cache_key": "layout",
    "LAYOUT_VERSION": "layout",
    "set_byte_cache": "cache",
    "byte_cache": "cache",
    "benchmark_read": "bench",
}
#: the package's modules
_MODULES = ("baskets", "bench", "branches", "cache", "chunk", "fallback", "files", "layout",
            "prefetch", "reader", "remote")

__all__ = list(_API)


def __getattr__(name: str) -> object:
    import importlib

    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | set(_MODULES))
