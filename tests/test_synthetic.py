"""Tests of agc_core.synthetic: schema, determinism, kinematics, clustering, cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import uproot

from agc_core import synthetic
from agc_core.config import AnalysisConfig
from agc_core.errors import ConfigError

FILE_EVENTS = 20_000          # per file of the on-disk test dataset (one file per sample)
INT_BRANCHES = {"jet_ch", "electron_ch", "muon_ch", "PV_npvs", "PV_npvsGood"}


# --------------------------------------------------------------------------------------------
# helpers and fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, cfg) -> Path:
    """A reduced on-disk dataset: every sample, one file of FILE_EVENTS events."""
    out = tmp_path_factory.mktemp("synthetic")
    return synthetic.generate_dataset(out, events_per_file=FILE_EVENTS, files_per_sample=1,
                                      cfg=cfg, progress=False)


def open_tree(dataset: Path, process: str, variation: str, cfg: AnalysisConfig):
    return uproot.open(dataset.parent / f"{process}__{variation}" / "0.root")[cfg.dataset.tree]


# --------------------------------------------------------------------------------------------
# files and schema


def test_fileset_lists_every_sample(dataset, cfg):
    fileset = json.loads(dataset.read_text())
    assert dataset.name == "fileset.json"
    assert [(p, v) for p, vs in fileset.items() for v in vs] == cfg.samples
    for p, vs in fileset.items():
        for entry in vs.values():
            (f,) = entry["files"]
            assert not Path(f["path"]).is_absolute()
            assert (dataset.parent / f["path"]).is_file()
            assert f.get("entries", f["nevts"]) == FILE_EVENTS == uproot.open(
                dataset.parent / f["path"])[cfg.dataset.tree].num_entries
            # a filtered sample (dataset.generator_filter) is normalized by its generated
            # events and declares its entries beside them
            filtered = synthetic.sample_filter(cfg.dataset.generator_filter, p) is not None
            assert (f["nevts"] > 5 * FILE_EVENTS) if filtered else (f["nevts"] == FILE_EVENTS)
    assert not [p for p in dataset.parent.rglob(".*")], "temporary files left behind"


def test_required_branches_and_layout(dataset, cfg):
    tree = open_tree(dataset, "ttbar", "nominal", cfg)
    assert tree.num_entries == FILE_EVENTS
    assert synthetic.GENERATOR_VERSION in tree.title
    needed = set(cfg.analysis_branches).union(*cfg.io_branch_sets.values())
    assert needed <= set(tree.keys())
    for name, branch in tree.items():
        if name.startswith("number"):
            assert branch.interpretation == uproot.AsDtype(">i4")
        elif name.split("_")[0] in ("met", "PV"):  # per-event scalars
            assert branch.count_branch is None
        else:
            obj = name.split("_")[0]
            assert branch.count_branch.name == f"number{obj}"
            dtype = ">i4" if name in INT_BRANCHES else ">f4"
            assert branch.interpretation == uproot.AsJagged(uproot.AsDtype(dtype)), name


def test_branch_names_and_types_match_agc(dataset, cfg, shared_agc):
    agc_names = set((shared_agc / "branches.txt").read_text().split())
    tree = open_tree(dataset, "wjets", "nominal", cfg)
    assert set(tree.keys()) <= agc_names, set(tree.keys()) - agc_names
    assert {"PV_npvs", "PV_x", "met_pt", "numbertrigobj"} <= set(tree.keys())
    # same element types as the real (POET, ROOT-written) layout
    poet = uproot.open(shared_agc / "poet_layout_sample.root")["events"]
    common = set(tree.keys()) & set(poet.keys())
    assert len(common) > 30
    for name in common:
        ours, theirs = tree[name].interpretation, poet[name].interpretation
        ours = getattr(ours, "content", ours)
        theirs = getattr(theirs, "content", theirs)
        assert ours.from_dtype == theirs.from_dtype, name


def test_file_content_equals_in_memory_events(dataset, cfg):
    arrays = open_tree(dataset, "single_top_tW", "nominal", cfg).arrays(library="np")
    batches = list(synthetic.iter_sample_events("single_top_tW", "nominal", FILE_EVENTS,
                                                cfg.dataset.seed, cfg))
    for name in ("numberjet", "jet_pt", "jet_btag", "electron_pt", "muon_pt", "met_pt",
                 "trigobj_e", "PV_npvs"):
        expected = np.concatenate([b.branches()[name] for b in batches])
        got = arrays[name]
        if got.dtype == object:
            got = np.concatenate(got)
        np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("compression", synthetic.COMPRESSIONS)
def test_compressions(tmp_path, cfg, compression):
    params = synthetic.resolve_params(cfg, 300, 1, 5, compression, None)
    path = tmp_path / "x.root"
    entry = synthetic.write_sample_file(path, "ttbar", "nominal", 0, params, cfg)
    assert entry["size"] == path.stat().st_size
    with uproot.open(path) as f:
        assert f[cfg.dataset.tree].num_entries == 300
        assert len(f[cfg.dataset.tree]["jet_pt"].array()) == 300


def test_fast_zlib_writes_standard_zlib_blocks():
    """The generator's zlib compressor (libdeflate) makes streams the standard library
    reads, under ROOT's ZLIB algorithm code, deterministically."""
    import zlib

    data = np.random.default_rng(3).normal(size=50_000).astype(np.float32).tobytes()
    fast = synthetic.writer._compression("zlib", 1)
    assert fast.code == uproot.ZLIB(1).code
    block = uproot.compression.compress(data, fast)
    assert zlib.decompress(block[9:]) == data  # after the 9-byte ROOT block header
    assert block[:2] == b"ZL" and block == uproot.compression.compress(data, fast)


def test_regenerated_files_keep_their_uuid(tmp_path, cfg):
    """The JER draws are keyed on the file's UUID: a regenerated file must get the same one,
    and different files different ones."""
    from agc_core.planning import file_identity

    params = synthetic.resolve_params(cfg, 200, 1, 5, "zlib", None)
    paths = [tmp_path / "a.root", tmp_path / "b.root", tmp_path / "c.root"]
    synthetic.write_sample_file(paths[0], "ttbar", "nominal", 0, params, cfg)
    synthetic.write_sample_file(paths[1], "ttbar", "nominal", 0, params, cfg)
    synthetic.write_sample_file(paths[2], "ttbar", "nominal", 1, params, cfg)
    uuids = []
    for path in paths:
        with uproot.open(path) as f:
            uuids.append(f.file.uuid)
    assert uuids[0] == uuids[1] != uuids[2]
    ids = [file_identity(str(p)) for p in paths]
    assert ids[0] == ids[1] != ids[2]


def test_same_bytes_for_any_worker_count(tmp_path, cfg):
    """Files generated in this process, or by two pool processes at another time, have the
    same bytes (UUIDs, write time and file name fixed; branches, tree title identical), and
    the manifest (sizes, SHA-256) and fileset are the same."""
    kw = {"events_per_file": 400, "files_per_sample": 1, "seed": 7, "cfg": cfg,
          "progress": False}
    one = synthetic.generate_dataset(tmp_path / "one", workers=1, **kw).parent
    statuses = []
    two = synthetic.generate_dataset(tmp_path / "two", workers=2,
                                     status=lambda: statuses.append(1) or "x", **kw).parent
    assert len(statuses) == len(cfg.samples) + 1  # once at the start, once per file
    names = sorted(p.relative_to(one) for p in one.rglob("*.root"))
    assert len(names) == len(cfg.samples)
    assert names == sorted(p.relative_to(two) for p in two.rglob("*.root"))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    for meta in (synthetic.MANIFEST_NAME, synthetic.FILESET_NAME):
        assert (one / meta).read_text() == (two / meta).read_text()
    with uproot.open(one / names[0]) as f:
        assert f.key(cfg.dataset.tree).created_on == synthetic.WRITE_TIME
    assert not [p for p in two.rglob(".*")], "temporary folders left behind"


def test_invalid_parameters(tmp_path, cfg):
    with pytest.raises(ConfigError, match="gzip"):
        synthetic.generate_dataset(tmp_path, 10, 1, 1, "gzip", cfg=cfg)
    with pytest.raises(ConfigError, match="events per file"):
        synthetic.generate_dataset(tmp_path, 0, 1, 1, cfg=cfg)
    with pytest.raises(ConfigError, match="no generator tune"):
        synthetic.sample_tune("ttbar", "nonexistent")


# --------------------------------------------------------------------------------------------
# determinism and kinematics


def test_same_seed_same_events_other_seed_other_events(cfg):
    tune = synthetic.sample_tune("ttbar", "nominal")
    a = synthetic.generate_events(tune, 3000, seed=7, stream=0, file_idx=0).branches()
    b = synthetic.generate_events(tune, 3000, seed=7, stream=0, file_idx=0).branches()
    c = synthetic.generate_events(tune, 3000, seed=8, stream=0, file_idx=0).branches()
    d = synthetic.generate_events(tune, 3000, seed=7, stream=0, file_idx=1).branches()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    for other in (c, d):
        assert not np.array_equal(a["numberjet"], other["numberjet"])
        assert not np.array_equal(a["met_pt"], other["met_pt"])


def test_variation_samples_reuse_the_nominal_events(cfg):
    """ttbar variations are the nominal's generated events simulated with other knobs."""
    def first_batch(variation: str) -> synthetic.EventBatch:
        return next(synthetic.iter_sample_events("ttbar", variation, 2000, 5, cfg))

    nominal = first_batch("nominal")
    for variation in ("scaledown", "scaleup", "ME_var", "PS_var"):
        varied = first_batch(variation)
        np.testing.assert_array_equal(varied.scalars["PV_npvs"], nominal.scalars["PV_npvs"])
        assert not np.array_equal(varied.jagged["jet"]["pt"], nominal.jagged["jet"]["pt"])


@pytest.mark.parametrize("process", ["ttbar", "wjets", "single_top_t_chan"])
def test_kinematics_are_consistent(cfg, process):
    tune = synthetic.sample_tune(process, "nominal")
    batch = synthetic.generate_events(tune, 5000, seed=3, stream=0, file_idx=0)
    for name in ("jet", "electron", "muon", "trigobj"):
        f = batch.jagged[name]
        assert batch.counts[name].sum() == f["pt"].shape[0] > 0
        for prop in ("pt", "eta", "phi", "e", "px", "py", "pz"):
            assert f[prop].dtype == np.float32
            assert np.isfinite(f[prop]).all()
        pt, eta, phi = (f[k].astype(np.float64) for k in ("pt", "eta", "phi"))
        np.testing.assert_allclose(f["px"], pt * np.cos(phi), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(f["py"], pt * np.sin(phi), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(f["pz"], pt * np.sinh(eta), rtol=1e-6, atol=1e-5)
        p = np.sqrt(f["px"].astype(np.float64) ** 2 + f["py"].astype(np.float64) ** 2
                    + f["pz"].astype(np.float64) ** 2)
        assert (f["e"].astype(np.float64) >= p * (1 - 1e-6)).all()
        assert (f["e"].astype(np.float64) >= pt * np.cosh(eta)).all()
        assert (pt > 0).all() and (np.abs(phi) <= np.pi).all()
        # objects are stored by decreasing pt within each event
        starts = np.repeat(np.cumsum(batch.counts[name]) - batch.counts[name],
                           batch.counts[name])
        within = np.arange(pt.shape[0]) > starts
        assert (np.diff(pt)[within[1:]] <= 0).all()
    met = batch.scalars
    np.testing.assert_allclose(met["met_pt"], np.hypot(met["met_px"], met["met_py"]),
                               rtol=1e-5)
    np.testing.assert_allclose(np.cos(met["met_phi"]) * met["met_pt"], met["met_px"],
                               rtol=1e-4, atol=1e-3)
    btag = batch.jagged["jet"]["btag"]
    assert ((btag >= 0) & (btag <= 1)).all()
    assert (batch.jagged["jet"]["mass"] > 0).all()
    # soft jets below the analysis threshold and soft (non-isolated) leptons are stored too
    assert (batch.jagged["jet"]["pt"] < cfg.selection.jet_pt_min).any()
    assert (batch.jagged["muon"]["pt"] < cfg.selection.muon_pt_min).any()


def test_btag_rates_by_flavour():
    det = synthetic.DETECTOR
    rng = np.random.default_rng(1)
    n = 200_000
    flavour = np.repeat(np.array([[5, 4, 0]], dtype=np.int8), n, axis=0)
    partons = synthetic.partons._Partons(np.full(flavour.shape, 200.0), np.zeros(flavour.shape),
                                 np.zeros(flavour.shape), np.zeros(flavour.shape), flavour,
                                 np.ones(flavour.shape, bool))
    _, jets = synthetic.detector._reco_jets(rng, [(partons, 1.0, 0.0)], 1.0, det)
    tagged = (jets["btag"] >= 0.5).reshape(n, 3).mean(axis=0)
    assert tagged[0] == pytest.approx(det.btag_eff_b, abs=0.01)
    assert tagged[1] == pytest.approx(det.btag_eff_c, abs=0.01)
    assert tagged[2] == pytest.approx(det.btag_eff_light, abs=0.01)
    assert tagged[0] > 0.6 and tagged[2] < 0.1


# --------------------------------------------------------------------------------------------
# physics: the calibration against the real CMS analysis is tests/test_calibration.py


def test_close_partons_make_one_jet():
    """Partons closer than the jet radius are clustered; the b flavour survives."""
    pt = np.array([[100.0, 30.0, 50.0]])
    eta = np.array([[0.0, 0.2, 1.5]])
    phi = np.array([[0.0, 0.1, 2.0]])
    flavour = np.array([[0, 5, 0]], dtype=np.int8)
    partons = synthetic.partons._Partons(pt, eta, phi, np.zeros_like(pt), flavour,
                                 np.ones(pt.shape, bool))
    jets = synthetic.partons._cluster(partons)
    assert jets.valid.tolist() == [[True, False, True]]
    assert jets.flavour[0, 0] == 5
    px = 100.0 + 30.0 * np.cos(0.1)
    py = 30.0 * np.sin(0.1)
    assert jets.pt[0, 0] == pytest.approx(np.hypot(px, py))
    assert jets.pt[0, 2] == 50.0 and jets.eta[0, 2] == 1.5


def test_shower_scale_variations_shift_jets_opposite_ways(cfg):
    """scaleup (less out-of-cone radiation) gives harder jets than nominal, scaledown softer."""
    def mean_jet_pt(variation: str) -> float:
        batch = next(synthetic.iter_sample_events("ttbar", variation, 5000, 3, cfg))
        return float(batch.jagged["jet"]["pt"][batch.jagged["jet"]["pt"] > 25].mean())

    assert mean_jet_pt("scaleup") > mean_jet_pt("nominal") > mean_jet_pt("scaledown")


# --------------------------------------------------------------------------------------------
# cache


def read_branches(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        arrays = f["events"].arrays(["jet_pt", "muon_pt", "met_pt"], library="np")
    return {k: np.concatenate(v) if v.dtype == object else v for k, v in arrays.items()}


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.root")}


def test_ensure_dataset_reuses_and_repairs(tmp_path, cfg):
    kw = {"events_per_file": 500, "files_per_sample": 1, "seed": 11, "cfg": cfg,
          "progress": False}
    fileset = synthetic.ensure_dataset(tmp_path, **kw)
    first = mtimes(tmp_path)
    assert len(first) == len(cfg.samples)
    manifest = json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())
    assert manifest["generator"] == synthetic.GENERATOR_VERSION
    assert manifest["params"]["seed"] == 11

    # intact files are reused
    assert synthetic.ensure_dataset(tmp_path, **kw) == fileset
    assert mtimes(tmp_path) == first
    # ... and, once checked, known by size and modification time: no file is opened again,
    # except one whose time changed (here it cannot be opened: regenerated)
    recorded = json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())["files"]
    assert {rel: e["mtime_ns"] for rel, e in recorded.items()} == first
    touched = tmp_path / "ttbar__scaleup" / "0.root"
    os.utime(touched, ns=(first["ttbar__scaleup/0.root"] + 10**9,) * 2)
    real_open = synthetic.dataset.uproot.open
    synthetic.dataset.uproot.open = lambda *a, **k: (_ for _ in ()).throw(OSError("opened"))
    try:
        synthetic.ensure_dataset(tmp_path, **kw)
    finally:
        synthetic.dataset.uproot.open = real_open
    regenerated = mtimes(tmp_path)
    assert {k for k in first if regenerated[k] != first[k]} == {"ttbar__scaleup/0.root"}
    first = regenerated

    # a truncated and a deleted file are regenerated (same content), the others kept
    truncated = tmp_path / "wjets__nominal" / "0.root"
    deleted = tmp_path / "ttbar__PS_var" / "0.root"
    content = {p: read_branches(p) for p in (truncated, deleted)}
    truncated.write_bytes(truncated.read_bytes()[:1000])
    deleted.unlink()
    synthetic.ensure_dataset(tmp_path, **kw)
    after = mtimes(tmp_path)
    changed = {k for k in first if after[k] != first[k]}
    assert changed == {"wjets__nominal/0.root", "ttbar__PS_var/0.root"}
    for path, expected in content.items():
        for name, values in read_branches(path).items():
            np.testing.assert_array_equal(values, expected[name], err_msg=name)

    # same size, other bytes: caught by the checksum only
    target = tmp_path / "single_top_tW__nominal" / "0.root"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    before = target.stat().st_mtime_ns
    synthetic.ensure_dataset(tmp_path, **kw)
    assert target.stat().st_mtime_ns == before
    synthetic.ensure_dataset(tmp_path, checksum=True, **kw)
    assert target.stat().st_mtime_ns != before
    entry = json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())["files"][
        "single_top_tW__nominal/0.root"]
    assert synthetic.writer._sha256(target) == entry["sha256"]

    # another parameter: everything is regenerated
    before = mtimes(tmp_path)
    synthetic.ensure_dataset(tmp_path, **{**kw, "seed": 12})
    after = mtimes(tmp_path)
    assert all(after[k] != before[k] for k in before)
    assert json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())["params"]["seed"] == 12


def test_changed_generator_knobs_regenerate_their_sample(tmp_path, cfg, monkeypatch):
    """A tune changed without a version bump: that sample's cached files are regenerated,
    the others reused."""
    import dataclasses

    kw = {"events_per_file": 300, "files_per_sample": 1, "seed": 12, "cfg": cfg,
          "progress": False}
    synthetic.ensure_dataset(tmp_path, **kw)
    first = mtimes(tmp_path)
    tune = synthetic.TUNES["single_top_s_chan"]
    monkeypatch.setitem(synthetic.TUNES, "single_top_s_chan",
                        dataclasses.replace(tune, fsr_prob=tune.fsr_prob + 0.01))
    synthetic.ensure_dataset(tmp_path, **kw)
    again = mtimes(tmp_path)
    assert {k for k in first if again[k] != first[k]} == {"single_top_s_chan__nominal/0.root"}
    entry = json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())["files"][
        "single_top_s_chan__nominal/0.root"]
    assert entry["tune"] == synthetic.tune_digest("single_top_s_chan", "nominal")


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("AGC_CORE_DATA", str(tmp_path / "x"))
    assert synthetic.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("AGC_CORE_DATA")
    assert synthetic.default_data_dir() == Path.home() / ".cache" / "agc-core" / "dataset"


def test_cli_generate(tmp_path, capsys, cfg):
    from agc_core.cli import main

    out = tmp_path / "cli"
    rc = main(["-q", "generate", "--out", str(out), "--events-per-file", "300",
               "--files-per-sample", "2", "--seed", "3", "--compression", "lz4"])
    assert rc == 0
    assert "wrote 18 files" in capsys.readouterr().out
    fileset = json.loads((out / "fileset.json").read_text())
    assert [f["nevts"] for f in fileset["ttbar"]["nominal"]["files"]] == [300, 300]
    # W+jets is generator-filtered: nevts counts the generated events
    assert [f["entries"] for f in fileset["wjets"]["nominal"]["files"]] == [300, 300]
    assert all(f["nevts"] > 5 * 300 for f in fileset["wjets"]["nominal"]["files"])
    assert len(list(out.rglob("*.root"))) == 2 * len(cfg.samples)


def test_cli_defaults_come_from_the_config(cfg):
    from agc_core.cli import build_parser

    args = build_parser().parse_args(["generate"])
    d = cfg.dataset
    assert (args.events_per_file, args.files_per_sample, args.seed, args.compression) == (
        d.events_per_file, d.files_per_sample, d.seed, d.compression)
    assert args.out is None and callable(args.func)
    assert os.fspath(synthetic.default_data_dir())
