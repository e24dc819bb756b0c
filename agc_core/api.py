"""The package's top-level API: what a notebook or a script calls after ``import agc_core``.

::

    import agc_core

    result = agc_core.run(n_files_max_per_sample=1)   # RunOptions fields as keywords
    result.hist                                        # the seed's 5-axis hist.Hist
    fit = agc_core.fit(result.outputs["histograms.root"])  # or a hist.Hist, a workspace
    fit.bestfit[fit.poi_index], fit.uncertainty[fit.poi_index]
    h = agc_core.load_histograms("agc_output/histograms_full.npz")

Each call is a thin layer over the pipeline modules (:func:`agc_core.runner.run_analysis`,
:func:`agc_core.workspace.build`, the inference package's fit), as the CLI is; results render
as a short table in a notebook and as a short text elsewhere (:mod:`agc_core.display`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boost_histogram as bh
import numpy as np

from agc_core.config import (
    REGIONS,
    AnalysisConfig,
    FitConfig,
    load_analysis_config,
    load_fit_config,
)
from agc_core.errors import ConfigError, InputError
from agc_core.results import RunOptions, RunResult

if TYPE_CHECKING:
    from agc_core.inference.likelihood import Likelihood
    from agc_core.inference.results import FitResult

__all__ = ["FitSummary", "PlotImage", "fit", "inspect_workspace", "load_histograms", "run"]

#: what :func:`fit` accepts: a histogram file or workspace file, a histogram, a workspace
#: spec, or a run's result
FitSource = str | Path | bh.Histogram | dict | RunResult

_OUR_FILES = ("histograms.root, histograms_full.npz, histograms_full.uhi.json")


# ---------------------------------------------------------------------------------------------
# run


def run(options: RunOptions | None = None, /, **kwargs: Any) -> RunResult:
    """Run the whole analysis (:func:`agc_core.runner.run_analysis`) and return its result.

    Args:
        options: a :class:`~agc_core.results.RunOptions` to start from (default: every
            option at its default).
        **kwargs: :class:`~agc_core.results.RunOptions` fields, e.g. ``fileset``,
            ``n_files_max_per_sample``, ``executor``, ``chunksize``, ``output_dir``.

    Returns:
        The :class:`~agc_core.results.RunResult`; its ``hist`` is the seed's 5-axis
        ``hist.Hist`` (observable, region, process, variation, classification).

    Raises:
        ConfigError: an unknown option (named) or an invalid value.
        InputError, ModelError: as :func:`~agc_core.runner.run_analysis`.
    """
    from agc_core.runner import run_analysis

    known = [f.name for f in dataclasses.fields(RunOptions)]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"agc_core.run: unknown option {', '.join(map(repr, unknown))} "
                          f"(the RunOptions fields: {', '.join(known)})")
    result = run_analysis(dataclasses.replace(options or RunOptions(), **kwargs))
    return with_hist(result)


def with_hist(result: RunResult) -> RunResult:
    """The result with its histogram as a ``hist.Hist`` (the same cells, named axes)."""
    if result.hist is None:
        return result
    from agc_core.outputs import to_hist

    return dataclasses.replace(result, hist=to_hist(result.hist))


# ---------------------------------------------------------------------------------------------
# histograms


def load_histograms(path: str | Path, config: str | Path | None = None) -> Any:
    """Read any of a run's histogram files into a ``hist.Hist``.

    - ``histograms_full.npz`` and ``histograms_full.uhi.json``: the full 5-axis histogram
      (observable, region, process, variation, classification), every cell;
    - ``histograms.root`` (ours or the seed's cabinetry-style file): the fit templates as a
      4-axis histogram (observable in the fit binning, region, process, variation; summed
      over the classification, with the fit's 1e-6 offset per cell as stored); the
      pseudodata are the process ``pseudodata``.

    Args:
        path: the file.
        config: analysis YAML naming the regions and processes of ``histograms.root``
            (default: the packaged one).

    Raises:
        InputError: a missing or unreadable file, or a file of another kind (named).
    """
    from agc_core.outputs import load_full_histogram, load_uhi_histogram, to_hist

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: histogram file not found")
    if p.suffix == ".npz":
        return to_hist(load_full_histogram(p))
    if p.suffix == ".json":
        return load_uhi_histogram(p)
    if p.suffix == ".root":
        return _hist_from_root(p, load_analysis_config(config))
    raise InputError(f"{p}: not one of agc-core's histogram files ({_OUR_FILES})")


def _split_name(name: str, processes: list[str]) -> tuple[str, str, str] | None:
    """(region, process, variation) of a ``{region}_{process}[_{variation}]`` name."""
    region, _, rest = name.partition("_")
    if region not in REGIONS:
        return None
    for process in sorted(processes, key=len, reverse=True):  # single_top_t_chan first
        if rest == process:
            return region, process, "nominal"
        if rest.startswith(f"{process}_"):
            return region, process, rest[len(process) + 1:]
    return None


def _hist_from_root(path: Path, cfg: AnalysisConfig) -> Any:
    """``histograms.root``'s TH1s as one 4-axis ``hist.Hist`` (see :func:`load_histograms`)."""
    import hist
    import uproot

    from agc_core.outputs import SEED_AXIS_LABELS

    processes = [*cfg.xsec_pb, "pseudodata"]
    cells: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    edges: np.ndarray | None = None
    try:
        with uproot.open(path) as f:
            for key, cls in f.classnames(recursive=False).items():
                if not cls.startswith("TH1"):
                    continue
                name = key.split(";")[0]
                parts = _split_name(name, processes)
                if parts is None:
                    raise InputError(f"{path}: histogram '{name}' is not named "
                                     "{region}_{process}[_{variation}] (regions "
                                     f"{', '.join(REGIONS)}; processes {', '.join(processes)})")
                h = f[key]
                these = np.asarray(h.axis().edges(), dtype=float)
                if edges is None:
                    edges = these
                elif these.shape != edges.shape or not np.allclose(these, edges):
                    raise InputError(f"{path}: histogram '{name}' has other bins than the "
                                     "file's first histogram")
                values = np.asarray(h.values(flow=True), dtype=float)
                variances = h.variances(flow=True)
                cells[parts] = (values, np.asarray(values if variances is None else variances,
                                                   dtype=float))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read histograms ({exc})") from exc
    if edges is None:
        raise InputError(f"{path}: no TH1 histogram in the file")

    def ordered(i: int, order: list[str]) -> list[str]:
        found = {k[i] for k in cells}
        return [x for x in order if x in found] + sorted(found - set(order))

    variation_order = list(dict.fromkeys(["nominal", *(v for vs in cfg.variations.values()
                                                       for v in vs)]))
    axes = [hist.axis.Variable(edges, name="observable", label=SEED_AXIS_LABELS["observable"]),
            *(hist.axis.StrCategory(ordered(i, order), name=name, label=SEED_AXIS_LABELS[name])
              for i, (name, order) in enumerate((("region", list(REGIONS)),
                                                 ("process", processes),
                                                 ("variation", variation_order))))]
    out = hist.Hist(*axes, storage=hist.storage.Weight())
    view = out.view(flow=True)
    for (region, process, variation), (values, variances) in cells.items():
        index = (slice(None), axes[1].index(region), axes[2].index(process),
                 axes[3].index(variation))
        view.value[index] = values
        view.variance[index] = variances
    return out


# ---------------------------------------------------------------------------------------------
# fit


@dataclass(frozen=True, repr=False)
class PlotImage:
    """A PNG plot file that a notebook shows inline (``_repr_png_``)."""

    path: Path

    def _repr_png_(self) -> bytes:
        return self.path.read_bytes()

    def __repr__(self) -> str:
        return f"PlotImage({str(self.path)!r})"


@dataclass(frozen=True, repr=False, eq=False)
class FitSummary:
    """The maximum-likelihood fit of :func:`fit`, with what its plots need.

    Attributes:
        result: the fit (``FitResult``: labels, best fit, HESSE uncertainties, MINOS,
            correlations, diagnostics).
        workspace: the pyhf workspace spec that was fitted.
        likelihood: its compiled likelihood.
        prefit, postfit: per channel, the yields per sample and bin, the total with its
            uncertainty, and the data (before the fit and at the best fit).
        cfg, fit_cfg: the analysis and fit configurations.
        plot_dir: where :meth:`pulls` and :meth:`data_mc` write their PNG files (None: a
            temporary folder, made on first use).
    """

    result: FitResult
    workspace: dict[str, Any]
    likelihood: Likelihood
    prefit: dict[str, dict[str, Any]]
    postfit: dict[str, dict[str, Any]]
    cfg: AnalysisConfig
    fit_cfg: FitConfig
    plot_dir: Path | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Parameter names."""
        return self.result.labels

    @property
    def bestfit(self) -> np.ndarray:
        """Best-fit values, in the order of :attr:`labels`."""
        return self.result.bestfit

    @property
    def uncertainty(self) -> np.ndarray:
        """HESSE uncertainties, in the order of :attr:`labels`."""
        return self.result.uncertainty

    @property
    def poi_index(self) -> int:
        """Index of the parameter of interest in :attr:`labels`."""
        return self.result.poi_index

    @property
    def poi(self) -> str:
        """Name of the parameter of interest (``ttbar_norm``)."""
        return self.result.poi

    def value(self, name: str) -> tuple[float, float]:
        """(best fit, HESSE uncertainty) of a parameter."""
        return self.result.value(name)

    def _dir(self) -> Path:
        if self.plot_dir is not None:
            return Path(self.plot_dir)
        made = Path(tempfile.mkdtemp(prefix="agc-core-fit-plots-"))
        object.__setattr__(self, "plot_dir", made)
        return made

    def _draw(self, names: list[str]) -> list[PlotImage]:
        from agc_core.inference.plots import plot_jobs

        jobs = plot_jobs(self._dir(), self.likelihood, self.result, self.prefit, self.postfit,
                         None, None, self.cfg, self.fit_cfg)
        by_name = {name: (fn, args) for name, _, fn, args in jobs}
        out = []
        for name in names:
            fn, args = by_name[name]
            out.append(PlotImage(Path(fn(*args))))
        return out

    def pulls(self) -> PlotImage:
        """The nuisance parameters' pulls, ``(best fit - nominal) / pre-fit width``, with
        their post-fit uncertainties: the report's ``fit_pulls.png`` (the POI and the other
        unconstrained parameters left out; unlike cabinetry's ``visualize.pulls``, the per-bin
        ``staterror`` parameters are shown too)."""
        return self._draw(["fit_pulls.png"])[0]

    def data_mc(self, postfit: bool = True) -> list[PlotImage]:
        """Data and the stacked model per channel, pre-fit or at the best fit, with
        data / model below (``fit_{prefit,postfit}_<channel>.png``, one per channel)."""
        label = "postfit" if postfit else "prefit"
        tables = self.postfit if postfit else self.prefit
        return self._draw([f"fit_{label}_{channel.replace(' ', '_')}.png"
                           for channel in tables])

    def __repr__(self) -> str:
        from agc_core.display import fit_text

        return fit_text(self)

    def _repr_html_(self) -> str:
        from agc_core.display import fit_html

        return fit_html(self)


def _workspace_of(source: FitSource, fit_cfg: FitConfig, cfg: AnalysisConfig,
                  split_by_classification: bool) -> tuple[dict[str, Any], Path | None]:
    """The workspace spec of what :func:`fit` was given, and the folder it came from."""
    from agc_core import workspace

    if isinstance(source, RunResult):
        if source.hist is None:
            raise InputError("agc_core.fit: the run has no histogram (an I/O-only run)")
        return (workspace.build(source.hist, fit_cfg, cfg, split_by_classification),
                Path(source.output_dir) / "plots")
    if isinstance(source, bh.Histogram):
        if source.ndim != 5:
            raise InputError(f"agc_core.fit: a histogram of {source.ndim} axes; the fit builds "
                             "its templates from the run's 5-axis histogram (observable, "
                             "region, process, variation, classification): give a "
                             "histograms.root path for the file's own templates")
        return workspace.build(source, fit_cfg, cfg, split_by_classification), None
    if isinstance(source, dict):
        if "channels" not in source or "observations" not in source:
            raise InputError("agc_core.fit: the dict is not a pyhf workspace (no 'channels' "
                             "and 'observations')")
        workspace.validate_spec(source)
        return source, None
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: file not found")
        if path.suffix in (".root", ".npz"):
            return (workspace.build(path, fit_cfg, cfg, split_by_classification),
                    path.parent / "plots")
        if path.name.endswith(".uhi.json"):
            return _workspace_of(load_histograms(path), fit_cfg, cfg,
                                 split_by_classification)[0], path.parent / "plots"
        if path.suffix == ".json":
            spec = workspace.load(path)
            if not isinstance(spec, dict) or "channels" not in spec:
                raise InputError(f"{path}: not a pyhf workspace (no 'channels')")
            workspace.validate_spec(spec)
            return spec, path.parent / "plots"
        raise InputError(f"{path}: cannot fit this file (give {_OUR_FILES} or a pyhf "
                         "workspace JSON)")
    raise InputError(f"agc_core.fit: cannot fit a {type(source).__name__} (give a path, a "
                     "hist.Hist, a workspace dict or a run's result)")


def fit(source: FitSource, *, fit_config: str | Path | None = None,
        config: str | Path | None = None, split_by_classification: bool = False,
        plot_dir: str | Path | None = None) -> FitSummary:
    """Build the workspace of ``source`` (unless it is one) and fit it: MIGRAD, HESSE, MINOS
    on the POI, as the run's fit stage does (the same numbers from the same histograms).

    Args:
        source: ``histograms.root`` (ours or the seed's), ``histograms_full.npz``,
            ``histograms_full.uhi.json`` or ``workspace.json`` (a path); the run's 5-axis
            histogram (``hist.Hist`` or boost-histogram); a workspace spec (dict); or a
            :class:`~agc_core.results.RunResult`.
        fit_config: fit YAML (default: the packaged ``configs/fit.yaml``).
        config: analysis YAML (default: the packaged ``configs/analysis.yaml``).
        split_by_classification: two channels per region by MLP classification (needs the
            full histogram).
        plot_dir: where the fit's plots go (default: ``plots/`` beside a file or a run's
            outputs, else a temporary folder).

    Returns:
        The :class:`FitSummary`.

    Raises:
        InputError: unreadable or unusable input (named). ConfigError: a bad configuration.
        FitError: the fit did not converge.
    """
    from agc_core.inference.likelihood import Likelihood
    from agc_core.inference.mle import fit as maximum_likelihood
    from agc_core.inference.yields import prefit_covariance, yield_table

    cfg = load_analysis_config(config)
    fit_cfg = load_fit_config(fit_config, cfg)
    spec, default_dir = _workspace_of(source, fit_cfg, cfg, split_by_classification)
    lh = Likelihood.from_spec(spec)
    best = maximum_likelihood(lh, minos=(lh.poi,), fit_cfg=fit_cfg)
    prefit = yield_table(lh, lh.init, prefit_covariance(lh))
    postfit = (yield_table(lh, best.bestfit, best.covariance) if best.covariance is not None
               else {})
    where = Path(plot_dir) if plot_dir is not None else default_dir
    return FitSummary(best, spec, lh, prefit, postfit, cfg, fit_cfg, where)


def inspect_workspace(source: str | Path | dict[str, Any]) -> str:
    """``pyhf inspect``'s summary of a workspace (a ``workspace.json`` path or a spec).

    Raises:
        InputError: the file is missing or pyhf cannot read it (named).
    """
    from click.testing import CliRunner
    from pyhf.cli import cli as pyhf_cli  # the click group of the pyhf command

    with tempfile.TemporaryDirectory(prefix="agc-core-inspect-") as tmp:
        if isinstance(source, dict):
            path = Path(tmp) / "workspace.json"
            path.write_text(json.dumps(source))
        else:
            path = Path(source)
            if not path.exists():
                raise InputError(f"{path}: workspace file not found")
        with warnings.catch_warnings():  # pyhf's schema validation uses a deprecated
            warnings.simplefilter("ignore", DeprecationWarning)  # jsonschema API
            outcome = CliRunner().invoke(pyhf_cli, ["inspect", str(path)])
    if outcome.exit_code != 0:
        raise InputError(f"{path}: pyhf inspect failed ({outcome.exception or outcome.output})")
    return outcome.output
