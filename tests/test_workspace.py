"""Tests of agc_core.workspace: the pyhf spec built from the run's histograms (cabinetry's)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot
from fit_inputs import embedded_run, reference_inputs

from agc_core import workspace
from agc_core.config import load_fit_config
from agc_core.errors import ConfigError, InputError, ModelError


def _modifiers(spec, channel, sample):
    ch = next(c for c in spec["channels"] if c["name"] == channel)
    return next(s for s in ch["samples"] if s["name"] == sample)["modifiers"]


def test_reference_spec_is_cabinetry_s_model():
    spec = workspace.build(reference_inputs().root)
    import pyhf

    model = pyhf.Workspace(spec).model()
    assert model.config.npars == 34
    assert model.config.poi_name == "ttbar_norm"
    assert [c["name"] for c in spec["channels"]] == ["4j1b CR", "4j2b SR"]
    for ch in spec["channels"]:
        assert [s["name"] for s in ch["samples"]] == [
            "ttbar", "W+jets", "single top, s-channel", "single top, t-channel", "tW"]
        assert [len(s["modifiers"]) for s in ch["samples"]] == [21, 16, 14, 14, 14]
        assert all(len(s["data"]) == 11 for s in ch["samples"])
    mods = _modifiers(spec, "4j1b CR", "ttbar")
    assert [m["type"] for m in mods[:4]] == ["staterror", "normfactor", "normsys", "histosys"]
    assert mods[0]["name"] == "staterror_4j1b-CR"
    assert mods[-1] == {"name": "Luminosity", "type": "normsys", "data": {"hi": 1.03, "lo": 0.97}}


def test_reference_templates_follow_the_recipe():
    ref = reference_inputs()
    spec = workspace.build(ref.root)
    with uproot.open(ref.root) as f:
        nom = f["4j2b_ttbar"].values()
        up = f["4j2b_ttbar_ME_var"].values()
        t_chan = f["4j2b_single_top_t_chan"].values()
        data = f["4j2b_pseudodata"].values()
    mods = {(m["name"], m["type"]): m["data"] for m in _modifiers(spec, "4j2b SR", "ttbar")}
    hi = up.sum() / nom.sum()
    assert mods[("ME variation", "normsys")]["hi"] == pytest.approx(hi, rel=1e-12)
    assert mods[("ME variation", "normsys")]["lo"] == pytest.approx(2 - hi, rel=1e-12)
    hs = mods[("ME variation", "histosys")]
    np.testing.assert_allclose(hs["hi_data"], up * nom.sum() / up.sum(), rtol=1e-12)
    np.testing.assert_allclose(hs["lo_data"], 2 * nom - np.asarray(hs["hi_data"]), rtol=1e-12)
    # the t-channel sample is the t-channel histogram (the AGC config's typo is not copied)
    ch = next(c for c in spec["channels"] if c["name"] == "4j2b SR")
    sample = next(s for s in ch["samples"] if s["name"] == "single top, t-channel")
    np.testing.assert_allclose(sample["data"], t_chan, rtol=1e-12)
    obs = next(o for o in spec["observations"] if o["name"] == "4j2b SR")
    np.testing.assert_allclose(obs["data"], data, rtol=1e-12)


def test_file_and_histogram_give_the_same_spec(tmp_path):
    run = embedded_run()
    from_file = workspace.build(run.root)
    from_hist = workspace.build(run.hist)
    from_npz = workspace.from_histograms_file(run.full)
    for other in (from_hist, from_npz):
        for a, b in zip(from_file["channels"], other["channels"], strict=True):
            for sa, sb in zip(a["samples"], b["samples"], strict=True):
                np.testing.assert_allclose(sa["data"], sb["data"], rtol=1e-12)
    path = workspace.write(from_file, tmp_path / "workspace.json")
    assert workspace.load(path) == from_file


def test_split_by_classification():
    run = embedded_run()
    whole = workspace.build(run.hist)
    split = workspace.build(run.hist, split_by_classification=True)
    names = [c["name"] for c in split["channels"]]
    assert names == ["4j1b CR bkg-like", "4j1b CR sig-like", "4j2b SR bkg-like",
                     "4j2b SR sig-like"]
    for i, ch in enumerate(whole["channels"]):
        for j, sample in enumerate(ch["samples"]):
            parts = [np.asarray(split["channels"][2 * i + c]["samples"][j]["data"])
                     for c in (0, 1)]
            np.testing.assert_allclose(parts[0] + parts[1], sample["data"], atol=1e-5)
    # histograms.root alone is summed over the classification: the .npz beside it is used
    assert workspace.build(run.root, split_by_classification=True)["channels"][1]["name"] == \
        "4j1b CR sig-like"


def test_missing_histogram_is_named(tmp_path):
    ref = embedded_run()
    path = tmp_path / "histograms.root"
    with uproot.open(ref.root) as src, uproot.recreate(path) as dst:
        for key in src.keys(cycle=False):
            if key != "4j2b_wjets_pt_res_up":
                dst[key] = src[key]
    with pytest.raises(InputError, match=r"histogram '4j2b_wjets_pt_res_up' is missing .*"
                                         r"Jet energy resolution.*W\+jets.*4j2b SR"):
        workspace.build(path)
    with pytest.raises(InputError, match="not found"):
        workspace.build(tmp_path / "nothing.root")
    with pytest.raises(InputError, match="needs the full histogram"):
        workspace.build(path, split_by_classification=True)


def test_zero_nominal_yield_is_named(tmp_path):
    ref = embedded_run()
    path = tmp_path / "histograms.root"
    with uproot.open(ref.root) as src, uproot.recreate(path) as dst:
        for key in src.keys(cycle=False):
            h = src[key]
            if key == "4j1b_single_top_s_chan":
                values = np.zeros_like(h.values())
                dst[key] = (values, h.axes[0].edges())
            else:
                dst[key] = h
    with pytest.raises(ModelError, match=r"systematic 'Jet energy scale' on sample 'single "
                                         r"top, s-channel' in channel '4j1b CR': the nominal "
                                         r"yield is 0"):
        workspace.build(path)


def test_fit_config_errors(tmp_path):
    good = load_fit_config()
    text = good.path.read_text()
    bad = tmp_path / "fit.yaml"
    bad.write_text(text.replace("staterror: true", "staterror: true\nstaterrors: false"))
    with pytest.raises(ConfigError, match=r"fit.yaml: unknown key 'staterrors' \(line \d+\)"):
        load_fit_config(bad)
    bad.write_text(text.replace("    up: pt_res_up", "    up: pt_res_upp"))
    with pytest.raises(ConfigError, match=r"systematics\[4\]\.up'.*unknown variation "
                                          "'pt_res_upp'"):
        load_fit_config(bad)
    bad.write_text(text.replace("samples: [W+jets]", "samples: [Wjets]"))
    with pytest.raises(ConfigError, match="unknown sample 'Wjets'"):
        load_fit_config(bad)
    bad.write_text(text.replace("    process: single_top_tW", "    process: single_top_Wt"))
    with pytest.raises(ConfigError, match="unknown process 'single_top_Wt'"):
        load_fit_config(bad)
    bad.write_text(text.replace("  - name: ME variation\n", "  - name: ME variation\n"
                                "    colour: red\n"))
    with pytest.raises(ConfigError, match=r"unknown key 'systematics\[0\]\.colour' \(line"):
        load_fit_config(bad)
    bad.write_text("poi: [")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_fit_config(bad)


def test_spec_failing_the_schema_is_reported():
    spec = workspace.build(embedded_run().hist)
    broken = dict(spec, measurements=[{"name": "x"}])
    with pytest.raises(ModelError, match="schema"):
        workspace.validate_spec(broken)


def test_schema_check_is_pyhf_s_without_importing_pyhf():
    """validate_spec (jsonschema on pyhf's schema files) says what pyhf.schema.validate says."""
    import copy
    import subprocess
    import sys

    import pyhf

    spec = workspace.build(embedded_run().hist)
    pyhf.schema.validate(spec, "workspace.json")
    bad_type = copy.deepcopy(spec)
    bad_type["observations"][0]["data"][1] = "a"
    no_version = {k: v for k, v in spec.items() if k != "version"}
    bad_modifier = copy.deepcopy(spec)
    bad_modifier["channels"][0]["samples"][0]["modifiers"][0]["type"] = "nope"
    for bad in (bad_type, no_version, bad_modifier):
        with pytest.raises(pyhf.exceptions.InvalidSpecification) as theirs:
            pyhf.schema.validate(bad, "workspace.json")
        with pytest.raises(ModelError) as ours:
            workspace.validate_spec(bad)
        assert str(ours.value).endswith(str(theirs.value))
    code = ("import json, sys; from agc_core import workspace; "
            "workspace.validate_spec(json.loads(sys.stdin.read())); print('pyhf' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(spec),
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
