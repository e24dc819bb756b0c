"""Load and validate the fit configuration (``configs/fit.yaml``): channels, samples,
systematics and minimizer settings, checked against the analysis configuration."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agc_core.config.analysis import CONFIG_DIR, AnalysisConfig, load_analysis_config
from agc_core.config.reading import _FitReader, _read_yaml_with_lines
from agc_core.errors import ConfigError

log = logging.getLogger(__name__)

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
