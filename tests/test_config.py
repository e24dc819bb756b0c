"""Tests of agc_core.config: loading, derived values and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agc_core.config import (
    DEFAULT_ANALYSIS_CONFIG,
    evaluate_number,
    load_analysis_config,
    parse_analysis_config,
)
from agc_core.errors import ConfigError


def raw_config() -> dict:
    return yaml.safe_load(DEFAULT_ANALYSIS_CONFIG.read_text())


def test_packaged_config_values(cfg):
    assert cfg.luminosity_pb == 3378
    assert cfg.selection.jet_pt_min == 25 and cfg.selection.electron_pt_min == 25
    assert cfg.selection.btag_threshold == 0.5
    assert (cfg.binning.bins, cfg.binning.low, cfg.binning.high) == (25, 50, 550)
    assert cfg.systematics.jes_factor == 1.03 and cfg.systematics.jer_width == 0.05
    assert cfg.xsec_pb["ttbar"] == pytest.approx(396.87 + 332.97)
    assert cfg.xsec_pb["single_top_t_chan"] == pytest.approx((36.993 + 22.175) / 0.252)
    assert cfg.xsec_pb["wjets"] == pytest.approx(61457 * 0.252)
    assert len(cfg.samples) == 9
    assert [r.name for r in cfg.regions] == ["4j1b", "4j2b"]
    assert [len(r.features) for r in cfg.regions] == [4, 5]


def test_fill_variations(cfg):
    wj = cfg.fill_variations("wjets", "nominal")
    assert wj[0] == "nominal" and wj[-2:] == ["pt_scale_up", "pt_res_up"]
    assert "scale_var_up" in wj and "scale_var_down" in wj
    tt = cfg.fill_variations("ttbar", "nominal")
    assert "scale_var_up" not in tt and len(tt) == 1 + 8 + 2
    assert cfg.fill_variations("ttbar", "PS_var") == ["PS_var"]
    allv = cfg.all_variations()
    assert len(allv) == len(set(allv)) == 1 + 2 + 8 + 2 + 4


@pytest.mark.parametrize(
    ("text", "value"),
    [("1 + 2", 3.0), ("(36.993 + 22.175) / 0.252", (36.993 + 22.175) / 0.252), (7, 7.0),
     ("-2 * 3", -6.0)],
)
def test_evaluate_number(text, value):
    assert evaluate_number(text, "k", Path("f.yaml")) == pytest.approx(value)


@pytest.mark.parametrize("text", ["__import__('os')", "1 +", "2 ** 3", "abc", "1/0"])
def test_evaluate_number_rejects(text):
    with pytest.raises(ConfigError, match="key 'k'"):
        evaluate_number(text, "k", Path("f.yaml"))


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "analysis.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("luminosity_pb"), "missing key 'luminosity_pb'"),
        (lambda r: r["selection"].pop("jet_pt_min"), "missing key 'selection.jet_pt_min'"),
        (lambda r: r["processes"]["wjets"].update(xsec_pb="abc"),
         "key 'processes.wjets.xsec_pb'"),
        (lambda r: r["processes"]["wjets"].update(xsec_pb=-1),
         "'processes.wjets.xsec_pb' must be positive"),
        (lambda r: r["histogram"].update(bins=0), "'histogram.bins'"),
        (lambda r: r["systematics"]["btag"].pop("pt_ref"), "'systematics.btag.pt_ref'"),
        (lambda r: r["regions"]["4j2b"].update(n_features=4), "regions.4j2b.n_features"),
        (lambda r: r.update(signal_process="zprime"), "signal_process"),
    ],
)
def test_invalid_config_names_key_and_file(tmp_path, mutate, message):
    raw = raw_config()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_analysis_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_analysis_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_analysis_config(bad)
    with pytest.raises(ConfigError, match="top level"):
        parse_analysis_config([1, 2], bad)
