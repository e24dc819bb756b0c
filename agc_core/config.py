"""Load and validate the analysis configuration (``configs/analysis.yaml``)."""

from __future__ import annotations

import ast
import logging
import operator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from agc_core.errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
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


_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def evaluate_number(value: Any, key: str, path: Path) -> float:
    """Evaluate a number or a small arithmetic expression string (``+ - * /``, parentheses).

    Args:
        value: a number or a string such as ``"(36.993 + 22.175) / 0.252"``.
        key: the config key, for error messages.
        path: the config file, for error messages.

    Returns:
        The value as float.

    Raises:
        ConfigError: if the value is neither a number nor a valid expression.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{path}: key '{key}' must be a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: key '{key}' must be a number or expression, got {value!r}")

    def _eval(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return _eval(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -_eval(node.operand)
        raise ValueError(ast.dump(node))

    try:
        result = _eval(ast.parse(value, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"{path}: key '{key}' is not a valid expression: {value!r}") from exc
    return result


class _Reader:
    """Typed access to a nested mapping with errors naming the dotted key and the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, mapping: Any, key: str, prefix: str = "") -> Any:
        full = f"{prefix}.{key}" if prefix else key
        if not isinstance(mapping, dict):
            raise ConfigError(f"{self.path}: key '{prefix}' must be a mapping")
        if key not in mapping:
            raise ConfigError(f"{self.path}: missing key '{full}'")
        return mapping[key]

    def number(self, mapping: Any, key: str, prefix: str = "", positive: bool = False) -> float:
        full = f"{prefix}.{key}" if prefix else key
        value = evaluate_number(self.get(mapping, key, prefix), full, self.path)
        if positive and not value > 0:
            raise ConfigError(f"{self.path}: key '{full}' must be positive, got {value}")
        return value

    def integer(self, mapping: Any, key: str, prefix: str = "", minimum: int = 0) -> int:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{self.path}: key '{full}' must be an integer >= {minimum}, "
                              f"got {value!r}")
        return value

    def string(self, mapping: Any, key: str, prefix: str = "") -> str:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.path}: key '{full}' must be a non-empty string")
        return value

    def strings(self, mapping: Any, key: str, prefix: str = "") -> tuple[str, ...]:
        full = f"{prefix}.{key}" if prefix else key
        value = self.get(mapping, key, prefix)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.path}: key '{full}' must be a non-empty list of strings")
        return tuple(value)


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


# ---------------------------------------------------------------------------------------------
# fit configuration (configs/fit.yaml)

DEFAULT_FIT_CONFIG = CONFIG_DIR / "fit.yaml"
SYMMETRIZE = "symmetrize"


@dataclass(frozen=True)
class FitChannel:
    """A fit channel: its name and the analysis region it is built from."""

    name: str
    region: str


@dataclass(frozen=True)
class FitSample:
    """A fit sample: its name and the analysis process it is built from."""

    name: str
    process: str


@dataclass(frozen=True)
class FitSystematic:
    """One systematic of the fit.

    Attributes:
        name: the nuisance parameter's name.
        type: ``NormPlusShape`` (histogram variations) or ``Normalization`` (a relative
            normalization uncertainty).
        up: NormPlusShape: the up variation's histogram name; Normalization: the relative up
            shift (e.g. 0.03), as a string for NormPlusShape and a float for Normalization.
        down: NormPlusShape: the down variation's name, or ``symmetrize``; Normalization: the
            relative down shift (e.g. -0.03).
        samples: the fit sample names it applies to (all samples if the YAML omits it).
    """

    name: str
    type: str
    up: str | float
    down: str | float
    samples: tuple[str, ...]

    @property
    def symmetrized(self) -> bool:
        """One-sided: the down variation is the up variation mirrored around nominal."""
        return self.down == SYMMETRIZE


@dataclass(frozen=True)
class MinimizerSettings:
    """MIGRAD settings and the sizes of the studies beyond the best fit."""

    strategy: int
    retry_strategy: int
    tolerance: float
    max_calls: int
    scan_points: int
    scan_sigmas: float


@dataclass(frozen=True)
class FitConfig:
    """The whole fit configuration, validated."""

    path: Path
    measurement: str
    poi: str
    poi_nominal: float
    poi_bounds: tuple[float, float]
    poi_samples: tuple[str, ...]
    channels: tuple[FitChannel, ...]
    samples: tuple[FitSample, ...]
    data_histogram: str
    staterror: bool
    systematics: tuple[FitSystematic, ...]
    classification_labels: dict[int, str]
    minimizer: MinimizerSettings

    def sample(self, name: str) -> FitSample:
        """The fit sample called ``name``."""
        return next(s for s in self.samples if s.name == name)


class _LineDict(dict):
    """A YAML mapping that remembers the line of each key (for error messages)."""

    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader whose mappings are :class:`_LineDict`."""


def _construct_line_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _LineDict:
    loader.flatten_mapping(node)
    out = _LineDict()
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _construct_line_mapping)


def _read_yaml_with_lines(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc.strerror})") from exc
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from exc


class _FitReader(_Reader):
    """:class:`_Reader` plus unknown-key checks naming the line."""

    def at(self, mapping: Any, key: Any) -> str:
        line = getattr(mapping, "lines", {}).get(key)
        return f" (line {line})" if line else ""

    def check_keys(self, mapping: Any, allowed: tuple[str, ...], prefix: str,
                   optional: tuple[str, ...] = ()) -> None:
        if not isinstance(mapping, dict):
            raise ConfigError(f"{self.path}: key '{prefix or '<top level>'}' must be a mapping")
        for key in mapping:
            if key not in allowed and key not in optional:
                full = f"{prefix}.{key}" if prefix else str(key)
                raise ConfigError(f"{self.path}: unknown key '{full}'{self.at(mapping, key)} "
                                  f"(allowed: {', '.join(allowed + optional)})")

    def items(self, mapping: Any, key: str) -> list[Any]:
        value = self.get(mapping, key)
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{self.path}: key '{key}'{self.at(mapping, key)} must be a "
                              "non-empty list")
        return value


def parse_fit_config(raw: Any, path: Path, cfg: AnalysisConfig) -> FitConfig:
    """Validate a parsed fit YAML mapping against the analysis configuration.

    Args:
        raw: the parsed YAML document (mappings may carry line numbers).
        path: where it came from (for error messages).
        cfg: the analysis configuration (regions, processes, variation names).

    Returns:
        The validated :class:`FitConfig`.

    Raises:
        ConfigError: naming the file, the first unknown, missing or invalid key and its line.
    """
    r = _FitReader(path)
    top = ("measurement", "poi", "channels", "samples", "data", "staterror", "systematics",
           "classification_labels", "fit")
    r.check_keys(raw, top, "")
    for key in top:
        r.get(raw, key)

    poi = r.get(raw, "poi")
    r.check_keys(poi, ("name", "nominal", "bounds", "samples"), "poi")
    bounds = r.get(poi, "bounds", "poi")
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
            or not bounds[0] < bounds[1]):
        raise ConfigError(f"{path}: key 'poi.bounds'{r.at(poi, 'bounds')} must be [low, high] "
                          "with low < high")
    nominal = r.number(poi, "nominal", "poi")
    if not bounds[0] <= nominal <= bounds[1]:
        raise ConfigError(f"{path}: key 'poi.nominal' = {nominal} is outside 'poi.bounds'")

    regions = {reg.name for reg in cfg.regions}
    channels = []
    for i, ch in enumerate(r.items(raw, "channels")):
        prefix = f"channels[{i}]"
        r.check_keys(ch, ("name", "region"), prefix)
        region = r.string(ch, "region", prefix)
        if region not in regions:
            raise ConfigError(f"{path}: key '{prefix}.region'{r.at(ch, 'region')} names "
                              f"unknown region '{region}' (analysis regions: "
                              f"{', '.join(sorted(regions))})")
        channels.append(FitChannel(r.string(ch, "name", prefix), region))

    samples = []
    for i, s in enumerate(r.items(raw, "samples")):
        prefix = f"samples[{i}]"
        r.check_keys(s, ("name", "process"), prefix)
        process = r.string(s, "process", prefix)
        if process not in cfg.xsec_pb:
            raise ConfigError(f"{path}: key '{prefix}.process'{r.at(s, 'process')} names "
                              f"unknown process '{process}' (not in {cfg.path.name})")
        samples.append(FitSample(r.string(s, "name", prefix), process))
    names = [s.name for s in samples]
    for label, items in (("channels", [c.name for c in channels]), ("samples", names)):
        if len(set(items)) != len(items):
            raise ConfigError(f"{path}: key '{label}' has duplicate names")

    def sample_list(mapping: Any, prefix: str) -> tuple[str, ...]:
        if "samples" not in mapping:
            return tuple(names)
        chosen = r.strings(mapping, "samples", prefix)
        for name in chosen:
            if name not in names:
                raise ConfigError(f"{path}: key '{prefix}.samples'{r.at(mapping, 'samples')} "
                                  f"names unknown sample '{name}' (fit samples: "
                                  f"{', '.join(names)})")
        return chosen

    data = r.get(raw, "data")
    r.check_keys(data, ("histogram",), "data")
    staterror = r.get(raw, "staterror")
    if not isinstance(staterror, bool):
        raise ConfigError(f"{path}: key 'staterror' must be true or false")

    known_variations = set(cfg.all_variations())
    systematics = []
    for i, s in enumerate(r.items(raw, "systematics")):
        prefix = f"systematics[{i}]"
        r.check_keys(s, ("name", "type", "up", "down"), prefix, optional=("samples",))
        kind = r.string(s, "type", prefix)
        name = r.string(s, "name", prefix)
        if kind == "NormPlusShape":
            up: str | float = r.string(s, "up", prefix)
            down: str | float = r.string(s, "down", prefix)
            for key, var in (("up", up), ("down", down)):
                if var != SYMMETRIZE and var not in known_variations:
                    raise ConfigError(f"{path}: key '{prefix}.{key}'{r.at(s, key)} names "
                                      f"unknown variation '{var}' (not filled by "
                                      f"{cfg.path.name})")
            if up == SYMMETRIZE:
                raise ConfigError(f"{path}: key '{prefix}.up' cannot be '{SYMMETRIZE}'")
        elif kind == "Normalization":
            up = r.number(s, "up", prefix)
            down = r.number(s, "down", prefix)
            if not (up > -1 and down > -1):
                raise ConfigError(f"{path}: key '{prefix}' up/down must be > -1")
        else:
            raise ConfigError(f"{path}: key '{prefix}.type'{r.at(s, 'type')} must be "
                              f"NormPlusShape or Normalization, got {kind!r}")
        systematics.append(FitSystematic(name, kind, up, down, sample_list(s, prefix)))
    if len({s.name for s in systematics} | {r.string(poi, 'name', 'poi')}) != len(
            systematics) + 1:
        raise ConfigError(f"{path}: key 'systematics' has duplicate names (or the POI's)")

    labels_raw = r.get(raw, "classification_labels")
    if (not isinstance(labels_raw, dict) or set(labels_raw) != {0, 1}
            or not all(isinstance(v, str) and v for v in labels_raw.values())):
        raise ConfigError(f"{path}: key 'classification_labels' must map 0 and 1 to labels")

    m = r.get(raw, "fit")
    r.check_keys(m, ("strategy", "retry_strategy", "tolerance", "max_calls", "scan_points",
                     "scan_sigmas"), "fit")
    minimizer = MinimizerSettings(
        strategy=r.integer(m, "strategy", "fit"),
        retry_strategy=r.integer(m, "retry_strategy", "fit"),
        tolerance=r.number(m, "tolerance", "fit", positive=True),
        max_calls=r.integer(m, "max_calls", "fit", minimum=100),
        scan_points=r.integer(m, "scan_points", "fit", minimum=2),
        scan_sigmas=r.number(m, "scan_sigmas", "fit", positive=True),
    )
    for key in ("strategy", "retry_strategy"):
        if getattr(minimizer, key) > 2:
            raise ConfigError(f"{path}: key 'fit.{key}' must be 0, 1 or 2")

    return FitConfig(
        path=path,
        measurement=r.string(raw, "measurement"),
        poi=r.string(poi, "name", "poi"),
        poi_nominal=nominal,
        poi_bounds=(float(bounds[0]), float(bounds[1])),
        poi_samples=sample_list(poi, "poi"),
        channels=tuple(channels),
        samples=tuple(samples),
        data_histogram=r.string(data, "histogram", "data"),
        staterror=staterror,
        systematics=tuple(systematics),
        classification_labels={int(k): str(v) for k, v in labels_raw.items()},
        minimizer=minimizer,
    )


def load_fit_config(path: str | Path | None = None,
                    cfg: AnalysisConfig | None = None) -> FitConfig:
    """Load and validate a fit configuration file.

    Args:
        path: YAML file; defaults to the packaged ``configs/fit.yaml``.
        cfg: the analysis configuration it refers to (default: the packaged one).

    Returns:
        The validated :class:`FitConfig`.

    Raises:
        ConfigError: the file is missing, not YAML, or a key is unknown, missing or invalid
            (the message names the file, the key and its line).
    """
    p = (Path(path) if path is not None else DEFAULT_FIT_CONFIG).resolve()
    cfg = cfg or load_analysis_config()
    key = (p, cfg.path)
    if key not in _FIT_CACHE:
        _FIT_CACHE[key] = parse_fit_config(_read_yaml_with_lines(p), p, cfg)
        log.debug("loaded fit config %s", p)
    return _FIT_CACHE[key]


_FIT_CACHE: dict[tuple[Path, Path], FitConfig] = {}
