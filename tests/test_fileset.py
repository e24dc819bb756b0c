"""Tests of agc_core.fileset: parsing, limits, weights, path resolution and bad inputs."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from agc_core.config import load_analysis_config
from agc_core.errors import ConfigError, InputError
from agc_core.fileset import FileEntry, SampleFiles, is_url, load_fileset, resolve_path

SHARED = Path(__file__).resolve().parents[2] / "shared"
AGC_FILESET = SHARED / "agc" / "ntuples_merged.json"


@pytest.fixture(scope="module")
def cfg():
    return load_analysis_config()


def write(tmp_path: Path, doc, name: str = "fileset.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def small_doc() -> dict:
    return {
        "ttbar": {
            "nominal": {"files": [{"path": "a.root", "nevts": 100},
                                  {"path": "/abs/b.root", "nevts": 200},
                                  {"path": "https://host:1094//store/c.root", "nevts": 300}],
                        "nevts_total": 600},
            "ME_var": {"files": [{"path": "sub/me.root", "nevts": 50}]},
        },
        "wjets": {"nominal": {"files": [{"path": "root://eos//w.root", "nevts": 1000}]}},
        "data": {"nominal": {"files": [{"path": "data.root", "nevts": 7}]}},
    }


def test_small_fileset(tmp_path, cfg):
    samples = load_fileset(write(tmp_path, small_doc()), cfg)
    assert [(s.process, s.variation) for s in samples] == [
        ("ttbar", "nominal"), ("ttbar", "ME_var"), ("wjets", "nominal")]
    tt = samples[0]
    assert isinstance(tt, SampleFiles)
    assert tt.sample_id == cfg.samples.index(("ttbar", "nominal"))
    assert samples[1].sample_id == cfg.samples.index(("ttbar", "ME_var"))
    assert samples[2].sample_id == cfg.samples.index(("wjets", "nominal"))
    assert tt.files == (
        FileEntry(str(tmp_path.resolve() / "a.root"), 100, 0),
        FileEntry("/abs/b.root", 200, 1),
        FileEntry("https://host:1094//store/c.root", 300, 2),
    )
    assert samples[1].files[0].path == str(tmp_path.resolve() / "sub" / "me.root")
    assert samples[2].files[0].path == "root://eos//w.root"
    assert tt.nevts_total == 600
    assert tt.xsec == pytest.approx(396.87 + 332.97)
    assert tt.xsec_weight == pytest.approx((396.87 + 332.97) * 3378 / 600, rel=1e-12)
    assert samples[2].xsec_weight == pytest.approx(61457 * 0.252 * 3378 / 1000, rel=1e-12)


def test_n_files_max_per_sample(tmp_path, cfg):
    samples = load_fileset(write(tmp_path, small_doc()), cfg, n_files_max_per_sample=2)
    tt = samples[0]
    assert [f.file_id for f in tt.files] == [0, 1]
    assert tt.nevts_total == 300
    assert tt.xsec_weight == pytest.approx(tt.xsec * cfg.luminosity_pb / 300, rel=1e-12)
    assert len(samples[1].files) == 1


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_n_files_max_invalid(tmp_path, cfg, bad):
    with pytest.raises(ConfigError, match="n_files_max_per_sample"):
        load_fileset(write(tmp_path, small_doc()), cfg, n_files_max_per_sample=bad)


def test_unknown_variation_is_accepted_with_warning(tmp_path, cfg, caplog):
    doc = {"ttbar": {"weird": {"files": [{"path": "x.root", "nevts": 5}]},
                     "nominal": {"files": [{"path": "y.root", "nevts": 5}]}}}
    with caplog.at_level(logging.WARNING, logger="agc_core.fileset"):
        samples = load_fileset(write(tmp_path, doc), cfg)
    assert "'weird'" in caplog.text
    assert [s.variation for s in samples] == ["nominal", "weird"]
    assert samples[1].sample_id == len(cfg.samples)


def test_paths(tmp_path):
    assert is_url("https://a/b.root") and is_url("root://a//b.root") and is_url("file:///x")
    assert not is_url("/a/b.root") and not is_url("b.root") and not is_url("C_x:y.root")
    assert resolve_path("x/y.root", tmp_path) == str(tmp_path / "x" / "y.root")
    assert resolve_path("/x/y.root", tmp_path) == "/x/y.root"


@pytest.mark.skipif(not AGC_FILESET.exists(), reason="shared/ not available")
def test_real_agc_fileset(cfg):
    samples = load_fileset(AGC_FILESET, cfg)
    assert len(samples) == 9
    assert sum(len(s.files) for s in samples) == 2269
    assert sum(s.nevts_total for s in samples) == 948_063_650
    assert [(s.process, s.variation) for s in samples] == cfg.samples
    assert [s.sample_id for s in samples] == list(range(9))
    raw = json.loads(AGC_FILESET.read_text())
    for s in samples:  # the JSON's own totals agree with ours when all files are used
        assert s.nevts_total == raw[s.process][s.variation]["nevts_total"]
        assert all(f.path.startswith("https://") for f in s.files)
    limited = load_fileset(AGC_FILESET, cfg, n_files_max_per_sample=10)
    assert sum(len(s.files) for s in limited) == 8 * 10 + 6  # single_top_tW has only 6 files
    tt = limited[0]
    assert tt.nevts_total == sum(f["nevts"] for f in raw["ttbar"]["nominal"]["files"][:10])
    assert tt.xsec_weight == pytest.approx(729.84 * 3378 / tt.nevts_total, rel=1e-12)


# ---- bad inputs: each has its own message naming the file and the key ----

def test_missing_file(tmp_path, cfg):
    with pytest.raises(InputError, match=r"nope\.json: fileset file not found"):
        load_fileset(tmp_path / "nope.json", cfg)


def test_malformed_json(tmp_path, cfg):
    path = write(tmp_path, '{\n  "ttbar": {\n    "nominal": {"files": [}\n}')
    with pytest.raises(InputError, match=r"fileset\.json: malformed JSON at line 3, column 27"):
        load_fileset(path, cfg)


def test_unknown_process(tmp_path, cfg):
    doc = {"zprime": {"nominal": {"files": [{"path": "z.root", "nevts": 1}]}}}
    with pytest.raises(InputError, match=r"fileset\.json: process 'zprime' is unknown: it has no "
                                         r"cross section in .*analysis\.yaml"):
        load_fileset(write(tmp_path, doc), cfg)


def test_missing_nevts(tmp_path, cfg):
    doc = {"wjets": {"nominal": {"files": [{"path": "w1.root", "nevts": 3}, {"path": "w2.root"}]}}}
    with pytest.raises(InputError,
                       match=r"key 'wjets\.nominal\.files'\[1\] \(w2\.root\) has no 'nevts'"):
        load_fileset(write(tmp_path, doc), cfg)


@pytest.mark.parametrize(("nevts", "message"), [
    ("10", "must be an integer, got '10'"),
    (2.5, "must be an integer, got 2.5"),
    (True, "must be an integer, got True"),
    (-1, "must not be negative, got -1"),
])
def test_bad_nevts(tmp_path, cfg, nevts, message):
    doc = {"wjets": {"nominal": {"files": [{"path": "w.root", "nevts": nevts}]}}}
    with pytest.raises(InputError, match=r"wjets\.nominal\.files'\[0\]\.nevts \(w\.root\) "
                                         + message.replace(".", r"\.")):
        load_fileset(write(tmp_path, doc), cfg)


def test_missing_path(tmp_path, cfg):
    doc = {"wjets": {"nominal": {"files": [{"nevts": 3}]}}}
    with pytest.raises(InputError, match=r"key 'wjets\.nominal\.files'\[0\] has no 'path'"):
        load_fileset(write(tmp_path, doc), cfg)


def test_empty_file_list(tmp_path, cfg):
    doc = {"wjets": {"nominal": {"files": []}}}
    with pytest.raises(InputError, match=r"key 'wjets\.nominal\.files' is an empty file list"):
        load_fileset(write(tmp_path, doc), cfg)


def test_zero_events(tmp_path, cfg):
    doc = {"wjets": {"nominal": {"files": [{"path": "w.root", "nevts": 0}]}}}
    with pytest.raises(InputError, match=r"'wjets\.nominal': the files used declare 0 events"):
        load_fileset(write(tmp_path, doc), cfg)


@pytest.mark.parametrize(("doc", "message"), [
    ([1, 2], "the top level must be a non-empty object"),
    ({}, "the top level must be a non-empty object"),
    ({"ttbar": [1]}, "key 'ttbar' must be a non-empty object"),
    ({"ttbar": {"nominal": []}}, "key 'ttbar.nominal' must be an object with a 'files' list"),
    ({"ttbar": {"nominal": {"fils": []}}}, "key 'ttbar.nominal' has no 'files' list"),
    ({"ttbar": {"nominal": {"files": {"path": "a"}}}}, "key 'ttbar.nominal.files' must be a list"),
    ({"ttbar": {"nominal": {"files": ["a.root"]}}}, "[0] must be an object with 'path'"),
    ({"ttbar": {"nominal": {"files": [{"path": "", "nevts": 1}]}}}, "path must be a non-empty"),
    ({"data": {"nominal": {"files": [{"path": "d.root", "nevts": 1}]}}}, "no sample to process"),
])
def test_wrong_structure(tmp_path, cfg, doc, message):
    with pytest.raises(InputError, match=re.escape(message)):
        load_fileset(write(tmp_path, doc), cfg)


def test_directory_instead_of_file(tmp_path, cfg):
    with pytest.raises(InputError, match="is a directory"):
        load_fileset(tmp_path, cfg)
