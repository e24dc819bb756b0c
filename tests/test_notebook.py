"""notebooks/ttbar_analysis.ipynb: committed without outputs, and run top to bottom in a fresh
kernel (nbclient) on the embedded dataset, its printed ttbar_norm equal to the CLI's on the same
data, every plot drawn inline."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "ttbar_analysis.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: a cell draws when its code calls one of these (hist's plots, the fit's PlotImage outputs)
DRAWS = re.compile(r"\.plot\(|\.pulls\(\)|^figs\[\d\]$", re.MULTILINE)
POI_LINE = re.compile(r"fit result for ttbar_norm: (-?\d+\.\d{3}) \+/- (\d+\.\d{3})")


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    assert cells
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # the seed's knobs at the top, in the cell tagged "parameters"
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for knob in ("N_FILES_MAX_PER_SAMPLE", "USE_AGC_FILESET", "USE_DASK", "CHUNKSIZE",
                 "DISABLE_PROCESSING", "IO_FILE_PERCENT", "SYSTEMATICS"):
        assert re.search(rf"^{knob} = ", params[0].source, re.MULTILINE), knob


def _outputs(cell, kind: str) -> list:
    return [o for o in cell.outputs if o.output_type == kind]


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in _code_cells(nb) for o in _outputs(c, "stream"))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook run in a fresh kernel, in a temporary folder (its ``agc_output/`` there),
    on the embedded dataset; an error in any cell fails here (nbclient's CellExecutionError)."""
    from nbclient import NotebookClient

    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, folder / "executed.ipynb")  # to look at after a failure
    return nb, folder


@pytest.fixture(scope="module")
def cli_fit(tmp_path_factory) -> dict:
    """``python -m agc_core run`` on the same (embedded) dataset: its fit_results.json."""
    out = tmp_path_factory.mktemp("cli")
    done = subprocess.run([sys.executable, "-m", "agc_core", "-q", "run", "--no-plots",
                           "--output-dir", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "fit_results.json").read_text())["fit"]


def test_notebook_runs_top_to_bottom(executed):
    nb, folder = executed
    for cell in _code_cells(nb):
        assert not _outputs(cell, "error"), cell.source[:80]
        assert cell.execution_count is not None
    text = _text(nb)
    assert "processes in fileset: ['ttbar__nominal'" in text
    assert "execution took" in text and "event rate per worker (pure processtime)" in text
    out = folder / "agc_output"
    spec = json.loads((out / "workspace.json").read_text())  # pyhf inspect's summary of it
    samples = {s["name"] for ch in spec["channels"] for s in ch["samples"]}
    assert re.search(rf"channels\s+{len(spec['channels'])}\n\s+samples\s+{len(samples)}\n",
                     text)
    for name in ("histograms.root", "histograms_full.npz", "workspace.json", "report.html",
                 "plots/fit_pulls.png", "notebook/fit_pulls.png"):
        assert (out / name).exists(), name
    # no progress-bar warning (tqdm.auto's "IProgress not found"), nor any other warning
    stderr = "".join(o.get("text", "") for c in _code_cells(nb)
                     for o in _outputs(c, "stream") if o.name == "stderr")
    assert "IProgress" not in stderr and "Warning" not in stderr


def test_notebook_seed_accuracy_equals_agc_cores(executed, cfg):
    """The seed's accuracy formula on the notebook's hist.Hist, against agc_core.accuracy."""
    text = _text(executed[0])
    seed = dict(re.findall(r"total accuracy \((\w+), the seed's formula\): (\d\.\d{4})", text))
    ours = dict(re.findall(r"agc-core's accuracy in (\w+): .*overall (\d\.\d{4})", text))
    assert sorted(seed) == sorted(r.name for r in cfg.regions) and seed == ours


def test_notebook_draws_every_plot_inline(executed):
    nb, _ = executed
    drawing = [c for c in _code_cells(nb) if DRAWS.search(c.source)]
    # the seed's: stacks, overlay and accuracy panels of both regions, HT and m_bjj stacks,
    # b-tag and jet-energy variations; the fit's pulls, pre- and post-fit data/MC
    assert len(drawing) >= 15
    for cell in drawing:
        images = [o.data["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
        assert images, cell.source[:80]
        assert base64.b64decode(images[0])[:8] == PNG_MAGIC


def test_notebook_fit_equals_the_cli(executed, cli_fit):
    nb, _ = executed
    found = POI_LINE.findall(_text(nb))
    assert len(found) == 1
    value, error = found[0]
    poi = cli_fit["labels"].index(cli_fit["poi"])
    assert value == f"{cli_fit['bestfit'][poi]:.3f}"
    assert error == f"{cli_fit['uncertainty'][poi]:.3f}"
    # the run's result and the fit's render as short tables
    html = [o.data["text/html"] for c in _code_cells(nb) for o in _outputs(c, "execute_result")
            if "text/html" in o.data]
    assert any("agc-core run" in h and "complete" in h for h in html)
    assert any("agc-core fit" in h and "ttbar_norm" in h for h in html)
    assert any("agc-core fit stage" in h for h in html)  # the run's own fit stage
