"""Build the pyhf workspace (JSON spec) of the measurement from the run's histograms.

The construction is cabinetry 0.6's for the AGC config (``configs/fit.yaml`` holds ours), so
either tool fits the same model:

- one channel per ``fit_cfg.channels`` entry (11 bins, no flow bins), observations = the
  ``{region}_{data.histogram}`` bins as they are (not rounded); samples in config order;
- every sample first gets a ``staterror`` named ``staterror_<channel, spaces as '-'>`` whose
  data is the absolute sqrt(sum of squared weights) per bin (pyhf shares one gamma per bin);
- the POI samples get the normfactor (measurement: POI, init, bounds from ``poi``);
- each ``NormPlusShape`` systematic, in config order, is a ``normsys`` plus a ``histosys`` of
  the same name (one nuisance parameter): normsys hi = sum(up)/sum(nom), lo = sum(down)/sum(nom);
  histosys hi_data = up * sum(nom)/sum(up), lo_data = down * sum(nom)/sum(down). A symmetrized
  (one-sided) systematic has lo = 2 - hi and lo_data = 2 * nom - hi_data;
- a ``Normalization`` systematic (Luminosity) is a plain normsys hi = 1 + up, lo = 1 + down;
- no pruning or smoothing; pyhf's default interpolation codes. The one exception: a sample
  with a nominal yield below ``NEGLIGIBLE_SHARE`` of its channel's (no MC event, only the fit
  offset; happens in split channels of small data sets) gets no NormPlusShape systematics
  there, with a warning (its ratios up/nominal would be meaningless); a zero yield is an error.

Inputs: a cabinetry-style ``histograms.root`` (``{region}_{process}[_{variation}]``), the
lossless ``histograms_full.npz`` or the run's 5-axis boost-histogram (observable, region,
process, variation, classification; sliced and rebinned as :mod:`agc_core.outputs` does for
``histograms.root``). ``split_by_classification`` (full histogram only) makes each channel two,
``"<channel> <label>"`` for the MLP's background-like (0) and signal-like (1) events.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boost_histogram as bh
import numpy as np

from agc_core.config import (
    AnalysisConfig,
    FitConfig,
    FitSystematic,
    load_analysis_config,
    load_fit_config,
)
from agc_core.errors import InputError, ModelError
from agc_core.outputs import FULL_FILE_NAME, fit_histograms, load_full_histogram, write_text_atomic

log = logging.getLogger(__name__)

WORKSPACE_FILE_NAME = "workspace.json"
SPEC_VERSION = "1.0.0"
#: where pyhf's schema files say they live (their ``$id``)
SCHEMA_BASE = "https://scikit-hep.org/pyhf/schemas/"
#: a sample below this share of its channel's nominal yield (e.g. no MC event of it in a split
#: channel, only the fit offset) gets no shape systematics there; a zero yield is an error
NEGLIGIBLE_SHARE = 1e-6

#: (values, variances) of one 1-D template
Template = tuple[np.ndarray, np.ndarray]
Histograms = str | Path | bh.Histogram


class _Source:
    """Named 1-D templates from a histograms.root, a full histogram or its .npz file."""

    def __init__(self, histograms: Histograms, cfg: AnalysisConfig, split: bool,
                 n_classes: int) -> None:
        self.cfg = cfg
        self.name = "the run's histogram"
        hist: bh.Histogram | None = None
        self._root: dict[str, Template] | None = None
        if isinstance(histograms, bh.Histogram):
            hist = histograms
        else:
            path = Path(histograms)
            self.name = str(path)
            if not path.exists():
                raise InputError(f"{path}: histogram file not found")
            if path.suffix == ".npz":
                hist = load_full_histogram(path)
            elif split:
                full = path.parent / FULL_FILE_NAME
                if not full.exists():
                    raise InputError(f"{path}: --split-by-classification needs the full "
                                     f"histogram ({full} not found; histograms.root is summed "
                                     "over the MLP classification)")
                self.name = str(full)
                hist = load_full_histogram(full)
            else:
                self._root = _read_root(path)
        self._by_class: list[dict[str, bh.Histogram]] = []
        if hist is not None:
            if hist.ndim != 5:
                raise InputError(f"{self.name}: expected the 5-axis histogram (observable, "
                                 f"region, process, variation, classification), got "
                                 f"{hist.ndim} axes")
            if split:
                for c in range(n_classes):
                    one = hist.copy()
                    view = one.view(flow=True)
                    keep = np.zeros(view.shape[-1], dtype=bool)
                    keep[c] = True
                    view.value[..., ~keep] = 0.0
                    view.variance[..., ~keep] = 0.0
                    self._by_class.append(fit_histograms(one, cfg))
            else:
                self._by_class.append(fit_histograms(hist, cfg))

    def get(self, name: str, classification: int | None) -> Template | None:
        """The template ``name`` (of one classification when split), None if absent."""
        if self._root is not None:
            return self._root.get(name)
        h = self._by_class[classification or 0].get(name)
        if h is None:
            return None
        return np.asarray(h.values(), dtype=float), np.asarray(h.variances(), dtype=float)


def _read_root(path: Path) -> dict[str, Template]:
    import uproot

    out: dict[str, Template] = {}
    try:
        with uproot.open(path) as f:
            for key, cls in f.classnames(recursive=False).items():
                if not cls.startswith("TH1"):
                    continue
                h = f[key]
                variances = h.variances()
                values = h.values()
                out[key.split(";")[0]] = (np.asarray(values, dtype=float),
                                          np.asarray(variances if variances is not None
                                                     else values, dtype=float))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read histograms ({exc})") from exc
    return out


def _histogram_name(region: str, process: str, variation: str) -> str:
    return f"{region}_{process}" if variation == "nominal" else f"{region}_{process}_{variation}"


def _positive_total(values: np.ndarray, syst: FitSystematic, what: str, where: str) -> float:
    """The yield of a template a normalization is divided by; it must be positive.

    Raises:
        ModelError: naming the systematic, the template and the channel/sample.
    """
    total = float(values.sum())
    if not total > 0:
        raise ModelError(f"systematic '{syst.name}' on {where}: the {what} yield is {total:g} "
                         f"(a normalization systematic needs a positive yield)")
    return total


def _normplusshape(syst: FitSystematic, nom: np.ndarray, get: Callable[[str], np.ndarray],
                   where: str) -> list[dict[str, Any]]:
    """The normsys + histosys pair of one NormPlusShape systematic on one sample."""
    total = _positive_total(nom, syst, "nominal", where)
    up = get(str(syst.up))
    up_total = _positive_total(up, syst, f"'{syst.up}'", where)
    hi = up_total / total
    hi_data = up * total / up_total
    if syst.symmetrized:
        lo = 2.0 - hi
        lo_data = 2.0 * nom - hi_data
        if not lo > 0:
            raise ModelError(f"systematic '{syst.name}' on {where}: the symmetrized down "
                             f"normalization is {lo:g} (up is {hi:g} x nominal)")
    else:
        down = get(str(syst.down))
        down_total = _positive_total(down, syst, f"'{syst.down}'", where)
        lo = down_total / total
        lo_data = down * total / down_total
    return [
        {"name": syst.name, "type": "normsys", "data": {"hi": hi, "lo": lo}},
        {"name": syst.name, "type": "histosys",
         "data": {"hi_data": hi_data.tolist(), "lo_data": lo_data.tolist()}},
    ]


def channel_names(fit_cfg: FitConfig, split_by_classification: bool = False
                  ) -> list[tuple[str, str, int | None]]:
    """(channel name, region, classification or None) of every channel of the workspace."""
    if not split_by_classification:
        return [(ch.name, ch.region, None) for ch in fit_cfg.channels]
    labels = fit_cfg.classification_labels
    return [(f"{ch.name} {labels[c]}", ch.region, c) for ch in fit_cfg.channels
            for c in sorted(labels)]


def build(histograms: Histograms, fit_cfg: FitConfig | None = None,
          cfg: AnalysisConfig | None = None, split_by_classification: bool = False,
          validate: bool = True) -> dict[str, Any]:
    """Build the pyhf JSON spec of the measurement (see the module docstring).

    Args:
        histograms: a cabinetry-style ``histograms.root``, a ``histograms_full.npz`` or the
            run's 5-axis boost-histogram.
        fit_cfg: the fit configuration (default: the packaged ``configs/fit.yaml``).
        cfg: the analysis configuration (default: the packaged one).
        split_by_classification: two channels per region, by MLP classification (needs the
            full histogram: a histogram, a ``.npz``, or a ``histograms.root`` with
            ``histograms_full.npz`` beside it).
        validate: check the spec against pyhf's workspace schema.

    Returns:
        The workspace spec (``channels``, ``observations``, ``measurements``, ``version``).

    Raises:
        InputError: the histograms are unreadable or one is missing (named).
        ModelError: a systematic on a sample with zero nominal yield (named), or the spec
            fails pyhf's schema.
    """
    cfg = cfg or load_analysis_config()
    fit_cfg = fit_cfg or load_fit_config(cfg=cfg)
    source = _Source(histograms, cfg, split_by_classification,
                     len(fit_cfg.classification_labels))

    def need(region: str, process: str, variation: str, classification: int | None,
             why: str) -> Template:
        name = _histogram_name(region, process, variation)
        found = source.get(name, classification)
        if found is None:
            raise InputError(f"{source.name}: histogram '{name}' is missing (needed for {why})")
        return found

    totals = {(ch_name, cls): sum(float(need(region, s.process, "nominal", cls,
                                             f"sample '{s.name}' in channel '{ch_name}'"
                                             )[0].sum()) for s in fit_cfg.samples)
              for ch_name, region, cls in channel_names(fit_cfg, split_by_classification)}
    channels: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    for ch_name, region, cls in channel_names(fit_cfg, split_by_classification):
        samples = []
        for sample in fit_cfg.samples:
            where = f"sample '{sample.name}' in channel '{ch_name}'"
            nom, var = need(region, sample.process, "nominal", cls, where)
            modifiers: list[dict[str, Any]] = []
            if fit_cfg.staterror:
                modifiers.append({"name": f"staterror_{ch_name.replace(' ', '-')}",
                                  "type": "staterror",
                                  "data": np.sqrt(np.clip(var, 0.0, None)).tolist()})
            if sample.name in fit_cfg.poi_samples:
                modifiers.append({"name": fit_cfg.poi, "type": "normfactor", "data": None})
            negligible = 0 < nom.sum() < NEGLIGIBLE_SHARE * totals[(ch_name, cls)]
            if negligible:
                log.warning("%s has a negligible nominal yield (%.3g of %.3g in the channel): "
                            "its shape systematics are left out", where, nom.sum(),
                            totals[(ch_name, cls)])
            for syst in fit_cfg.systematics:
                if sample.name not in syst.samples or (negligible
                                                       and syst.type == "NormPlusShape"):
                    continue
                if syst.type == "Normalization":
                    modifiers.append({"name": syst.name, "type": "normsys",
                                      "data": {"hi": 1.0 + float(syst.up),
                                               "lo": 1.0 + float(syst.down)}})
                    continue

                def get(variation: str, region: str = region, sample: Any = sample,
                        cls: int | None = cls, syst: FitSystematic = syst,
                        where: str = where) -> np.ndarray:
                    return need(region, sample.process, variation, cls,
                                f"systematic '{syst.name}' on {where}")[0]

                modifiers += _normplusshape(syst, nom, get, where)
            samples.append({"name": sample.name, "data": nom.tolist(), "modifiers": modifiers})
        channels.append({"name": ch_name, "samples": samples})
        data = need(region, fit_cfg.data_histogram, "nominal", cls,
                    f"the observations of channel '{ch_name}'")[0]
        observations.append({"name": ch_name, "data": data.tolist()})
    lo, hi = fit_cfg.poi_bounds
    spec = {
        "channels": channels,
        "observations": observations,
        "measurements": [{
            "name": fit_cfg.measurement,
            "config": {"poi": fit_cfg.poi, "parameters": [
                {"name": fit_cfg.poi, "inits": [fit_cfg.poi_nominal], "bounds": [[lo, hi]]}]},
        }],
        "version": SPEC_VERSION,
    }
    if validate:
        validate_spec(spec)
    log.info("workspace: %d channels, %d samples, %d systematics from %s", len(channels),
             len(fit_cfg.samples), len(fit_cfg.systematics), source.name)
    return spec


def _pyhf_schema_dir() -> Path:
    """pyhf's schema folder of :data:`SPEC_VERSION`, found without importing pyhf."""
    import importlib.util

    found = importlib.util.find_spec("pyhf")
    if found is None or not found.submodule_search_locations:
        raise ModelError("pyhf is not installed: cannot validate the workspace")
    return Path(next(iter(found.submodule_search_locations))) / "schemas" / SPEC_VERSION


@functools.lru_cache(maxsize=1)
def _workspace_validator() -> Any:
    """jsonschema's Draft 6 validator of pyhf's ``workspace.json``, every schema file of the
    version registered under its ``$id`` (as ``pyhf.schema.validate`` resolves them)."""
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for path in sorted(_pyhf_schema_dir().glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    registry = Registry().with_resources(resources)
    # a reference to workspace.json by its URI, so that its own relative $ref resolves there
    schema = {"$ref": dict(resources)[f"{SCHEMA_BASE}{SPEC_VERSION}/workspace.json"].contents[
        "$id"]}
    return jsonschema.Draft6Validator(schema, registry=registry, format_checker=None)


def validate_spec(spec: dict[str, Any]) -> None:
    """Check a spec against pyhf's ``workspace.json`` schema.

    The check ``pyhf.schema.validate(spec, "workspace.json")`` makes (Draft 6, pyhf's schema
    files), done with jsonschema directly: importing pyhf costs 0.5-0.9 s and the fit does not
    need it. The message is pyhf's (``InvalidSpecification``: message, path, instance).

    Raises:
        ModelError: naming the first violation.
    """
    import jsonschema

    try:
        _workspace_validator().validate(spec)
    except jsonschema.ValidationError as err:
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in err.path)
        raise ModelError(f"the workspace does not validate against pyhf's schema: "
                         f"{err.message}.\n\tPath: {where.lstrip('.')}\n\tInstance: "
                         f"{err.instance} Schema: workspace.json") from err


def from_histograms_file(path: str | Path, fit_cfg: FitConfig | None = None,
                         cfg: AnalysisConfig | None = None,
                         split_by_classification: bool = False) -> dict[str, Any]:
    """:func:`build` from a ``histograms.root`` (or ``histograms_full.npz``) file."""
    return build(Path(path), fit_cfg, cfg, split_by_classification)


def write(spec: dict[str, Any], path: str | Path) -> Path:
    """Write a spec as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(spec, indent=1) + "\n")


def load(path: str | Path) -> dict[str, Any]:
    """Read a workspace JSON written by :func:`write` (or any pyhf workspace file).

    Raises:
        InputError: the file is unreadable or not JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the workspace ({exc})") from exc
