"""How a run reads its remote inputs, the runner's side of :mod:`agc_core.io`'s remote
reading: the byte cache folder (or a private spool), the read-ahead of the next chunks
(:mod:`agc_core.io.prefetch`), the cache's bound and the XRootD handles closed after the run,
and an early fork server released before planning forks parsing processes from it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agc_core.io.cache import ByteCache

if TYPE_CHECKING:
    from agc_core.fileset import SampleFiles
    from agc_core.planning import ChunkTask
    from agc_core.results import RunOptions
    from agc_core.worker import WorkerSetup

log = logging.getLogger(__name__)

def remote_files(samples: Sequence[SampleFiles]) -> int:
    """How many of the samples' files are remote (http, https, root)."""
    from agc_core.io.remote import is_remote

    return sum(1 for s in samples for f in s.files if is_remote(f.path))


def byte_cache_dir(samples: Sequence[SampleFiles], options: RunOptions, cache_root: Path,
                   out: Path) -> tuple[str | None, bool]:
    """The byte cache folder the workers read remote files through, and whether it is a
    private spool of this run (``--no-cache``: deleted at the end); (None, False) for a run
    without remote inputs, or without cache and read-ahead."""
    if not remote_files(samples):
        return None, False
    if options.cache:
        return str(cache_root), False
    if not options.read_ahead:
        return None, False  # every read from the network
    import tempfile

    return tempfile.mkdtemp(prefix=".agc-spool-", dir=out), True


def close_byte_cache(byte_dir: str | None, spool: bool, options: RunOptions,
                     clf_file: str | None = None) -> None:
    """After processing: the spool deleted, or the cache trimmed to its bound; the
    classifier's pickle of :func:`release_fork_server` removed; this process's XRootD handles
    closed and its reads no longer through the byte cache."""
    if clf_file is not None:
        with contextlib.suppress(OSError):
            Path(clf_file).unlink()
    from agc_core.io.cache import set_byte_cache
    from agc_core.io.remote import close_xrootd_handles

    close_xrootd_handles()  # at once, not one round trip after the other at exit
    set_byte_cache(None)  # the iterative executor's worker is this process: reads after the
    # run (io.read_chunk by a user) go to the network again
    if byte_dir is None:
        return
    if spool:
        import shutil

        shutil.rmtree(byte_dir, ignore_errors=True)
        return
    try:
        removed = ByteCache(byte_dir, options.cache_size).trim()
    except OSError as exc:
        log.warning("cannot trim the byte cache %s: %s", byte_dir, exc)
        return
    if removed:
        log.info("byte cache %s: removed %.1f MB of the least recently used ranges (bound "
                 "%.1f GB)", byte_dir, removed / 1e6,
                 ByteCache(byte_dir, options.cache_size).max_bytes / 1e9)


def release_fork_server(early: Path | None, samples: Sequence[SampleFiles],
                        setup: WorkerSetup, folder: Path) -> tuple[Path | None, str | None]:
    """Planning many remote files forks parsing processes from the fork server (see
    :func:`agc_core.planning.plan_tasks`); one that ``python -m agc_core run`` started early
    waits for its warm-up instructions, which come after planning: it gets them now, without a
    file (the MLP only; the warm-up skips remote files anyway).

    Returns:
        (the instructions file still to write, None once written; the classifier's pickle
        file to remove after the run, or None).
    """
    from agc_core import planning
    from agc_core.forkserver import write_instructions
    from agc_core.worker import warmup_spec

    if early is None or remote_files(samples) < planning.PLAN_PROCESSES_MIN_FILES:
        return early, None
    spec, clf_file = warmup_spec(None, setup, folder)
    write_instructions(early, spec)
    return None, clf_file


def prefetcher(todo: Sequence[ChunkTask], setup: WorkerSetup, options: RunOptions,
                workers: int) -> Any:
    """The read-ahead of the remote chunks (:mod:`agc_core.io.prefetch`), None where there is
    nothing to fetch ahead, or on Dask: its scheduler hands out every chunk at once (a worker
    would fetch a chunk while the read-ahead fetches it too), and its workers may not share this
    machine's disk; they read through the byte cache of their own machine."""
    from agc_core.io import prefetch
    from agc_core.io.cache import ByteCache

    if (not options.read_ahead or setup.cache_dir is None or options.executor == "dask"
            or not any(prefetch.eligible(t) for t in todo)):
        return None
    return prefetch.Prefetcher(todo, setup.branches,
                               ByteCache(setup.cache_dir, setup.cache_max_bytes), workers,
                               spool=not options.cache)


def speculation(options: RunOptions, setup: WorkerSetup) -> Any:
    """The :class:`agc_core.speculation.Speculation` of a run with remote inputs and a byte
    cache (warm files planned without a request, confirmed while processing); None without a
    cache, and on Dask (its workers read through their own machines' caches)."""
    from agc_core.speculation import Speculation

    if setup.cache_dir is None or not options.cache or options.executor == "dask":
        return None
    return Speculation(ByteCache(setup.cache_dir, setup.cache_max_bytes), setup.branches)

