"""One run pinned: its full histogram bit for bit, its fit results to 1e-10.

The reference (``tests/data/pinned_run.json``) was written by this file's ``__main__`` from the
code before the modules were split into subpackages (commit 7579bc3); a refactoring that moves
code must leave it unchanged. Regenerate it only for a deliberate change of the results:
``.venv/bin/python tests/test_pinned_results.py --write``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agc_core.histograms import histogram_digest

REFERENCE = Path(__file__).parent / "data" / "pinned_run.json"
#: the pinned run: one generated file of this many events per sample, read in these chunks
EVENTS, CHUNK = 2000, 700
#: fit results that are timings, not results
UNPINNED = ("seconds",)
TOLERANCE = 1e-10


def _drop_unpinned(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_unpinned(v) for k, v in value.items() if k not in UNPINNED}
    if isinstance(value, list):
        return [_drop_unpinned(v) for v in value]
    return value


def pinned_run(folder: Path) -> dict[str, Any]:
    """Generate the small dataset, run the analysis in process (MLP, systematics, fit) and
    return the histogram's digest with the fit results."""
    from agc_core.results import RunOptions
    from agc_core.runner import run_analysis
    from agc_core.synthetic import generate_dataset

    fileset = generate_dataset(folder / "dataset", events_per_file=EVENTS, files_per_sample=1,
                               progress=False)
    result = run_analysis(RunOptions(fileset=Path(fileset), output_dir=folder / "out",
                                     chunksize=CHUNK, plots=False, executor="iterative",
                                     progress=False))
    assert result.complete and result.exit_code == 0
    fit = json.loads((folder / "out" / "fit_results.json").read_text())
    return {"histogram_sha256": histogram_digest(result.hist), "fit_results": _drop_unpinned(fit)}


def assert_close(got: Any, want: Any, where: str = "fit_results") -> None:
    """Floats within :data:`TOLERANCE` (relative and absolute); everything else equal."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), where
        for key in want:
            assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        np.testing.assert_allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE, err_msg=where)
    else:
        assert got == want, where


def test_the_pinned_run_is_unchanged(tmp_path):
    want = json.loads(REFERENCE.read_text())
    got = pinned_run(tmp_path)
    assert got["histogram_sha256"] == want["histogram_sha256"]
    assert_close(got["fit_results"], want["fit_results"])


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        REFERENCE.write_text(json.dumps(pinned_run(Path(tmp)), indent=1) + "\n")
    print(f"wrote {REFERENCE}")
