"""Load and validate the analysis configuration (``configs/analysis.yaml``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from agc_core.config.reading import _Reader
from agc_core.errors import ConfigError

log = logging.getLogger(__name__)

#: the packaged configuration files (configs/ at the top of the repository)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_ANALYSIS_CONFIG = CONFIG_DIR / "analysis.yaml"

REGIONS = ("4j1b", "4j2b")


@dataclass(frozen=True)
class Selection:
    """Object and event selection cuts (GeV)."""

    electron_pt_min: float
    muon_pt_min: float
    jet_pt_min: float
    n_leptons: int
    n_jets_min: int
    btag_threshold: float
    n_btag_min: int


@dataclass(frozen=True)
class Region:
    """One analysis region: labels and MLP feature names."""

    name: str
    label: str
    observable: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class Binning:
    """Observable histogram binning and the seed's fit slicing/rebinning."""

    bins: int
    low: float
    high: float
    fit_low: float
    fit_rebin: int
    fit_bin_offset: float

    @property
    def width(self) -> float:
        """Bin width in GeV."""
        return (self.high - self.low) / self.bins


@dataclass(frozen=True)
class Systematics:
    """Numbers of the systematic variations."""

    jes_factor: float
    jer_width: float
    btag_n_jets: int
    btag_magnitude: float
    btag_pt_ref: float
    wjets_process: str
    wjets_magnitude: float


@dataclass(frozen=True)
class InputChecks:
    """Sanity checks on the chunks read.

    Attributes:
        max_objects_per_event: the largest multiplicity of one collection in one event that
            is accepted (a larger one is taken for corrupt input and fails the chunk).
        nonnegative: branches whose negative values are reported.
    """

    max_objects_per_event: int
    nonnegative: tuple[str, ...]


@dataclass(frozen=True)
class GeneratorFilter:
    """Generator-level filter of one process of the embedded dataset (a filtered sample).

    Events are generated in blocks; the parton level of all of them is generated, and only
    the events that can pass the selection go on to the clustering, the detector and the
    file, until it holds ``events_per_file`` of them. The fileset's ``nevts`` counts the
    events generated for them (the normalization; the file's entries are declared beside).

    Attributes:
        process: the filtered process.
        multiplier: events generated per block over the generator's block size (about the
            inverse of the filter's efficiency, so a block fills about one basket).
        min_partons: at least this many matrix-element + shower partons (the first cut, on
            the radiation multiplicity alone).
        lepton_pt_min: the W's charged lepton (before a tau decays) above this pt (GeV) ...
        lepton_eta_max: ... and within this pseudorapidity, or the event has a heavy-flavour
            parton (its non-prompt lepton may be the selected one).
        jet_pt_min: parton-level jet candidates (partons and FSR gluons, tau jets, pileup
            jets) above this pt (GeV) ...
        min_jets: ... at least this many (the selection's ``n_jets_min``).
    """

    process: str
    multiplier: int
    min_partons: int
    lepton_pt_min: float
    lepton_eta_max: float
    jet_pt_min: float
    min_jets: int


@dataclass(frozen=True)
class DatasetParams:
    """Parameters of the embedded synthetic dataset (``cfg.dataset`` holds the defaults;
    ``agc_core.synthetic`` fills the ones a user overrides)."""

    events_per_file: int
    files_per_sample: int
    seed: int
    compression: str
    compression_level: int
    tree: str
    generator_filter: GeneratorFilter | None = None


@dataclass(frozen=True)
class AnalysisConfig:
    """The whole analysis configuration, validated."""

    path: Path
    name: str
    luminosity_pb: float
    xsec_pb: dict[str, float]
    variations: dict[str, tuple[str, ...]]
    signal_process: str
    selection: Selection
    regions: tuple[Region, ...]
    binning: Binning
    systematics: Systematics
    io_branch_sets: dict[int, tuple[str, ...]]
    analysis_branches: tuple[str, ...]
    input_checks: InputChecks
    pseudodata_ttbar_variations: tuple[str, ...]
    pseudodata_backgrounds: tuple[str, ...]
    dataset: DatasetParams

    @property
    def samples(self) -> list[tuple[str, str]]:
        """All (process, variation) pairs in config order."""
        return [(p, v) for p, vs in self.variations.items() for v in vs]

    def weight_variations(self, process: str) -> list[str]:
        """Names of the weight-based variations filled for a nominal sample of ``process``.

        Order: wjets scale_var (W+jets only), then btag_var_0..N up/down.
        """
        names: list[str] = []
        if process == self.systematics.wjets_process:
            names += ["scale_var_up", "scale_var_down"]
        for i in range(self.systematics.btag_n_jets):
            names += [f"btag_var_{i}_up", f"btag_var_{i}_down"]
        return names

    def fill_variations(self, process: str, variation: str) -> list[str]:
        """Every histogram variation a sample fills, in the canonical order.

        Nominal samples: nominal, weight variations, pt_scale_up, pt_res_up.
        Other samples: only their own variation name.
        """
        if variation != "nominal":
            return [variation]
        return ["nominal", *self.weight_variations(process), "pt_scale_up", "pt_res_up"]

    def all_variations(self) -> list[str]:
        """Union of all histogram variation names, in canonical order."""
        out: list[str] = []
        for process, variation in self.samples:
            for name in self.fill_variations(process, variation):
                if name not in out:
                    out.append(name)
        return out


def parse_analysis_config(raw: Any, path: Path) -> AnalysisConfig:
    """Validate a parsed YAML mapping and build the :class:`AnalysisConfig`.

    Args:
        raw: the parsed YAML document.
        path: where it came from (for error messages).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: naming the file and the first missing or invalid key.
    """
    r = _Reader(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")

    procs = r.get(raw, "processes")
    if not isinstance(procs, dict) or not procs:
        raise ConfigError(f"{path}: key 'processes' must be a non-empty mapping")
    xsec: dict[str, float] = {}
    variations: dict[str, tuple[str, ...]] = {}
    for name, entry in procs.items():
        prefix = f"processes.{name}"
        xsec[name] = r.number(entry, "xsec_pb", prefix, positive=True)
        variations[name] = r.strings(entry, "variations", prefix)
        if "nominal" not in variations[name]:
            raise ConfigError(f"{path}: key '{prefix}.variations' must contain 'nominal'")

    sel = r.get(raw, "selection")
    selection = Selection(
        electron_pt_min=r.number(sel, "electron_pt_min", "selection"),
        muon_pt_min=r.number(sel, "muon_pt_min", "selection"),
        jet_pt_min=r.number(sel, "jet_pt_min", "selection"),
        n_leptons=r.integer(sel, "n_leptons", "selection"),
        n_jets_min=r.integer(sel, "n_jets_min", "selection", minimum=3),
        btag_threshold=r.number(sel, "btag_threshold", "selection"),
        n_btag_min=r.integer(sel, "n_btag_min", "selection"),
    )

    regs = r.get(raw, "regions")
    if not isinstance(regs, dict) or tuple(regs) != REGIONS:
        raise ConfigError(f"{path}: key 'regions' must define exactly {list(REGIONS)} in order")
    regions = []
    for name, entry in regs.items():
        prefix = f"regions.{name}"
        feats = r.strings(entry, "features", prefix)
        n = r.integer(entry, "n_features", prefix, minimum=1)
        if n != len(feats):
            raise ConfigError(f"{path}: key '{prefix}.n_features' = {n} but 'features' lists "
                              f"{len(feats)}")
        regions.append(Region(name, r.string(entry, "label", prefix),
                              r.string(entry, "observable", prefix), feats))

    h = r.get(raw, "histogram")
    binning = Binning(
        bins=r.integer(h, "bins", "histogram", minimum=1),
        low=r.number(h, "low", "histogram"),
        high=r.number(h, "high", "histogram"),
        fit_low=r.number(h, "fit_low", "histogram"),
        fit_rebin=r.integer(h, "fit_rebin", "histogram", minimum=1),
        fit_bin_offset=r.number(h, "fit_bin_offset", "histogram"),
    )
    if not binning.high > binning.low:
        raise ConfigError(f"{path}: key 'histogram.high' must be larger than 'histogram.low'")

    s = r.get(raw, "systematics")
    btag = r.get(s, "btag", "systematics")
    wj = r.get(s, "wjets_scale", "systematics")
    systematics = Systematics(
        jes_factor=r.number(s, "jes_factor", "systematics", positive=True),
        jer_width=r.number(s, "jer_width", "systematics", positive=True),
        btag_n_jets=r.integer(btag, "n_jets", "systematics.btag"),
        btag_magnitude=r.number(btag, "magnitude", "systematics.btag"),
        btag_pt_ref=r.number(btag, "pt_ref", "systematics.btag", positive=True),
        wjets_process=r.string(wj, "process", "systematics.wjets_scale"),
        wjets_magnitude=r.number(wj, "magnitude", "systematics.wjets_scale"),
    )
    if systematics.btag_n_jets > selection.n_jets_min:
        raise ConfigError(f"{path}: key 'systematics.btag.n_jets' must be <= "
                          f"'selection.n_jets_min'")

    io_raw = r.get(raw, "io_branch_sets")
    if not isinstance(io_raw, dict) or not io_raw:
        raise ConfigError(f"{path}: key 'io_branch_sets' must be a non-empty mapping")
    io_sets = {int(k): r.strings(io_raw, k, "io_branch_sets") for k in io_raw}

    checks = r.get(raw, "input_checks")
    input_checks = InputChecks(
        max_objects_per_event=r.integer(checks, "max_objects_per_event", "input_checks",
                                        minimum=1),
        nonnegative=r.strings(checks, "nonnegative", "input_checks"),
    )

    pd = r.get(raw, "pseudodata")
    ds = r.get(raw, "dataset")
    signal = r.string(raw, "signal_process")
    if signal not in xsec:
        raise ConfigError(f"{path}: key 'signal_process' names unknown process '{signal}'")
    return AnalysisConfig(
        path=path,
        name=r.string(raw, "name"),
        luminosity_pb=r.number(raw, "luminosity_pb", positive=True),
        xsec_pb=xsec,
        variations=variations,
        signal_process=signal,
        selection=selection,
        regions=tuple(regions),
        binning=binning,
        systematics=systematics,
        io_branch_sets=io_sets,
        analysis_branches=r.strings(raw, "analysis_branches"),
        input_checks=input_checks,
        pseudodata_ttbar_variations=r.strings(pd, "ttbar_variations", "pseudodata"),
        pseudodata_backgrounds=r.strings(pd, "backgrounds", "pseudodata"),
        dataset=DatasetParams(
            events_per_file=r.integer(ds, "events_per_file", "dataset", minimum=1),
            files_per_sample=r.integer(ds, "files_per_sample", "dataset", minimum=1),
            seed=r.integer(ds, "seed", "dataset"),
            compression=r.string(ds, "compression", "dataset"),
            compression_level=r.integer(ds, "compression_level", "dataset"),
            tree=r.string(ds, "tree", "dataset"),
            generator_filter=_generator_filter(r, ds, xsec, selection.n_jets_min),
        ),
    )


def _generator_filter(r: _Reader, ds: Any, xsec: dict[str, float], min_jets: int
                      ) -> GeneratorFilter | None:
    """``dataset.generator_filter`` (optional)."""
    if not isinstance(ds, dict) or ds.get("generator_filter") is None:
        return None
    g = ds["generator_filter"]
    where = "dataset.generator_filter"
    process = r.string(g, "process", where)
    if process not in xsec:
        raise ConfigError(f"{r.path}: key '{where}.process' names unknown process '{process}'")
    return GeneratorFilter(
        process=process,
        multiplier=r.integer(g, "multiplier", where, minimum=1),
        min_partons=r.integer(g, "min_partons", where),
        lepton_pt_min=r.number(g, "lepton_pt_min", where),
        lepton_eta_max=r.number(g, "lepton_eta_max", where, positive=True),
        jet_pt_min=r.number(g, "jet_pt_min", where),
        min_jets=min_jets,
    )


def load_analysis_config(path: str | Path | None = None) -> AnalysisConfig:
    """Load and validate an analysis configuration file.

    Args:
        path: YAML file; defaults to the packaged ``configs/analysis.yaml``.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing, not YAML, or a key is missing or invalid.
    """
    p = Path(path) if path is not None else DEFAULT_ANALYSIS_CONFIG
    return _load_cached(p.resolve())


@lru_cache(maxsize=8)
def _load_cached(path: Path) -> AnalysisConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    cfg = parse_analysis_config(raw, path)
    log.debug("loaded analysis config %s", path)
    return cfg
