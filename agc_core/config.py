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
class DatasetParams:
    """Parameters of the embedded synthetic dataset (``cfg.dataset`` holds the defaults;
    ``agc_core.synthetic`` fills the ones a user overrides)."""

    events_per_file: int
    files_per_sample: int
    seed: int
    compression: str
    compression_level: int
    tree: str


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
        ),
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
