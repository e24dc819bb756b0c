"""Tests of agc_core.processor: histograms equal the awkward reference, chunking, features."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from agc_core import io
from agc_core.errors import ConfigError, InputError
from agc_core.fileset import load_fileset
from agc_core.fixtures import ThresholdClassifier, random_chunk, slice_chunk
from agc_core.histograms import HistArray
from agc_core.processor import (
    SampleInfo,
    Workspace,
    analyse_chunk,
    check_chunk,
    compute_features,
    process_chunk,
)
from agc_core.reference import analyse_chunk as reference_analyse
from agc_core.reference import process_chunk_reference

SEED = 77
EVENTS = 4000
#: chunked vs whole-file histograms: the same entries, summed per chunk then added, so only the
#: order of the float64 additions differs; measured worst case 1.9e-15 (relative, per bin)
CHUNKING_RTOL = 5e-15


class BitsClassifier:
    """Deterministic classes that depend on every bit of every feature (exactness probe)."""

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(features, dtype=np.float32).view(np.uint32)
        return (bits.astype(np.uint64).sum(axis=1) % 2).astype(np.int64)


def assert_same_hist(a: HistArray, b: HistArray, rtol: float = 0.0) -> None:
    """Equal histograms: bit for bit unless ``rtol`` (summation order differs) is given."""
    assert a.variations == b.variations
    assert a.sumw.shape == b.sumw.shape
    if rtol == 0.0:
        np.testing.assert_array_equal(a.sumw, b.sumw, strict=True)
        np.testing.assert_array_equal(a.sumw2, b.sumw2, strict=True)
        return
    np.testing.assert_allclose(a.sumw, b.sumw, rtol=rtol, atol=0)
    np.testing.assert_allclose(a.sumw2, b.sumw2, rtol=rtol, atol=0)


def entries(chunk, sample, cfg, classifier, processor) -> np.ndarray:
    """Number of entries per bin: the histogram filled with unit weights."""
    return processor(chunk, dataclasses.replace(sample, xsec_weight=1.0), cfg, classifier,
                     SEED).sumw[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The embedded dataset, small: one file of 4000 events per sample."""
    from agc_core.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("dataset")
    return Path(generate_dataset(out, events_per_file=EVENTS, files_per_sample=1,
                                 progress=False))


@pytest.fixture(scope="module")
def samples(dataset, cfg):
    return load_fileset(dataset, cfg)


def sample_info(s, file_id: int = 0) -> SampleInfo:
    return SampleInfo(s.process, s.variation, s.sample_id, file_id, s.xsec_weight)


def read(path: str, cfg, start: int = 0, stop: int | None = None):
    return io.read_chunk(path, cfg.analysis_branches, start, stop)


# --- kernels vs reference -------------------------------------------------------------------

@pytest.mark.parametrize(("process", "variation"), [
    ("ttbar", "nominal"), ("wjets", "nominal"), ("ttbar", "scaleup"),
    ("single_top_tW", "nominal"),
])
def test_random_chunk_equals_reference(cfg, process, variation):
    chunk = random_chunk(3000, 21, mean_jets=7.0, mean_leptons=0.6, entry_start=40)
    sample = SampleInfo(process, variation, cfg.samples.index((process, variation)), 2, 0.123)
    clf = BitsClassifier()
    ours = process_chunk(chunk, sample, cfg, clf, SEED)
    ref = process_chunk_reference(chunk, sample, cfg, clf, SEED)
    assert ours.variations == tuple(cfg.fill_variations(process, variation))
    assert_same_hist(ours, ref)
    np.testing.assert_array_equal(entries(chunk, sample, cfg, clf, process_chunk),
                                  entries(chunk, sample, cfg, clf, process_chunk_reference))
    assert ours.sumw.sum() > 0


def test_every_sample_of_the_embedded_dataset_equals_reference(cfg, samples):
    clf = BitsClassifier()
    assert len(samples) == len(cfg.samples)
    for s in samples:
        chunk = read(s.files[0].path, cfg)
        sample = sample_info(s)
        ours = process_chunk(chunk, sample, cfg, clf, SEED)
        ref = process_chunk_reference(chunk, sample, cfg, clf, SEED)
        assert_same_hist(ours, ref)
        for v, name in enumerate(ours.variations):  # entries identical, per variation
            nonzero_ours = ours.sumw2[v] > 0
            np.testing.assert_array_equal(nonzero_ours, ref.sumw2[v] > 0, err_msg=name)
        np.testing.assert_array_equal(entries(chunk, sample, cfg, clf, process_chunk),
                                      entries(chunk, sample, cfg, clf, process_chunk_reference))
        assert ours.sumw[0, :, :, 1:-1].sum() > 0, s.process


@pytest.mark.parametrize("n_chunks", [3, 17])
def test_chunking_does_not_change_histograms(cfg, samples, n_chunks):
    clf = ThresholdClassifier.from_config(cfg, 250.0)
    for s in samples:
        if s.variation != "nominal" or s.process not in ("ttbar", "wjets"):
            continue
        path = s.files[0].path
        whole = process_chunk(read(path, cfg), sample_info(s), cfg, clf, SEED)
        edges = np.linspace(0, EVENTS, n_chunks + 1).astype(int)
        parts = [process_chunk(read(path, cfg, a, b), sample_info(s), cfg, clf, SEED)
                 for a, b in itertools.pairwise(edges)]
        total = parts[0]
        for p in parts[1:]:
            total = total + p
        assert_same_hist(total, whole, CHUNKING_RTOL)
        assert whole.sumw[whole.variation_index("pt_res_up")].sum() > 0


@pytest.mark.parametrize("batch", [1, 333, EVENTS - 1])
def test_event_batches_give_the_same_histograms_bit_for_bit(cfg, samples, batch, monkeypatch):
    """process_chunk analyses at most BATCH_EVENTS events at a time (bounded buffers): every
    histogram cell is still filled in event order, so the result is bit-identical to one pass
    and to the reference, for chunks that start anywhere in the file."""
    from agc_core import processor

    clf = BitsClassifier()
    for s in samples:
        if s.variation != "nominal" or s.process not in ("ttbar", "wjets"):
            continue
        chunk = read(s.files[0].path, cfg, 17, EVENTS)
        whole = process_chunk(chunk, sample_info(s, 5), cfg, clf, SEED)
        monkeypatch.setattr(processor, "BATCH_EVENTS", batch)
        assert len(processor.event_batches(chunk, batch)) == -(-(EVENTS - 17) // batch)
        batched = processor.process_chunk(chunk, sample_info(s, 5), cfg, clf, SEED)
        monkeypatch.undo()
        assert_same_hist(batched, whole)
        if batch == 333:
            assert_same_hist(batched, process_chunk_reference(chunk, sample_info(s, 5), cfg,
                                                              clf, SEED))
        assert whole.sumw[whole.variation_index("pt_res_up")].sum() > 0


def test_in_memory_chunks_keep_jer_keys(cfg):
    """Slicing a chunk in memory (entry_start shifts) gives the same pt_res_up histogram."""
    chunk = random_chunk(2000, 3, entry_start=100)
    sample = SampleInfo("ttbar", "nominal", 0, 1, 1.0)
    clf = ThresholdClassifier.from_config(cfg, 250.0)
    whole = process_chunk(chunk, sample, cfg, clf, SEED)
    parts = [process_chunk(slice_chunk(chunk, a, b), sample, cfg, clf, SEED)
             for a, b in [(0, 1), (1, 999), (999, 2000)]]
    assert_same_hist(parts[0] + parts[1] + parts[2], whole, CHUNKING_RTOL)
    other_seed = process_chunk(chunk, sample, cfg, clf, SEED + 1)
    i = whole.variation_index("pt_res_up")
    assert not np.array_equal(other_seed.sumw[i], whole.sumw[i])
    np.testing.assert_array_equal(other_seed.sumw[0], whole.sumw[0])


# --- features, classifier calls, API --------------------------------------------------------

def test_compute_features_equal_reference(cfg):
    chunk = random_chunk(3000, 4)
    sample = SampleInfo("ttbar", "nominal", 0, 0, 1.0)
    feats = compute_features(chunk, sample, cfg, SEED)
    ref = reference_analyse(chunk, sample, cfg, SEED)["pt_nominal"]
    for region in cfg.regions:
        assert feats[region.name].dtype == np.float32
        assert feats[region.name].flags.c_contiguous
        assert feats[region.name].shape[1] == len(region.features)
        np.testing.assert_array_equal(feats[region.name], ref[region.name].features)


def test_features_follow_the_config_order(cfg):
    regions = tuple(dataclasses.replace(r, features=tuple(reversed(r.features)))
                    for r in cfg.regions)
    cfg2 = dataclasses.replace(cfg, regions=regions)
    chunk = random_chunk(1000, 5)
    sample = SampleInfo("ttbar", "nominal", 0, 0, 1.0)
    a = compute_features(chunk, sample, cfg, SEED)
    b = compute_features(chunk, sample, cfg2, SEED)
    for region in cfg.regions:
        np.testing.assert_array_equal(a[region.name][:, ::-1], b[region.name])
    bad = dataclasses.replace(cfg, regions=(dataclasses.replace(
        cfg.regions[0], features=("A", "lepton_pt", "leading_jet_pt", "MET")),
        cfg.regions[1]))
    with pytest.raises(ConfigError, match=r"regions\.4j1b\.features"):
        compute_features(chunk, sample, bad, SEED)


class CountingClassifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def classify(self, region: str, features: np.ndarray) -> np.ndarray:
        self.calls.append((region, features.shape[0]))
        return np.zeros(features.shape[0], dtype=np.int64)


def test_classifier_called_once_per_variation_and_region(cfg):
    chunk = random_chunk(3000, 6, mean_jets=7.0)
    clf = CountingClassifier()
    process_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg, clf, SEED)
    res = analyse_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg, SEED)
    expected = [(r, res.n(v, ir)) for v in range(3) for ir, r in enumerate(("4j1b", "4j2b"))]
    assert clf.calls == expected
    clf = CountingClassifier()
    process_chunk(chunk, SampleInfo("ttbar", "PS_var", 4, 0, 1.0), cfg, clf, SEED)
    assert [r for r, _ in clf.calls] == ["4j1b", "4j2b"]


def test_threshold_classifier(cfg):
    clf = ThresholdClassifier.from_config(cfg, 100.0)
    f = np.array([[0.1, 30, 50, 99.0], [0.2, 30, 50, 100.5]], dtype=np.float32)
    np.testing.assert_array_equal(clf.classify("4j1b", f), [0, 1])
    clf = ThresholdClassifier.from_config(cfg, 170.0, feature="trijet_mass")
    f = np.array([[171.0, 1, 30, 50, 99.0], [150, 1, 30, 50, 300]], dtype=np.float32)
    np.testing.assert_array_equal(clf.classify("4j2b", f), [1, 0])


def test_bad_classifier_output_is_reported(cfg):
    class Bad:
        def classify(self, region, features):
            return np.zeros(features.shape[0] + 1)

    with pytest.raises(ValueError, match="classifier returned shape"):
        process_chunk(random_chunk(500, 7, mean_jets=8.0), SampleInfo("ttbar", "nominal", 0, 0,
                      1.0), cfg, Bad(), SEED)


def test_missing_branch_is_reported(cfg):
    chunk = random_chunk(10, 8)
    del chunk.columns["jet_btag"]
    with pytest.raises(InputError, match="jet_btag"):
        process_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg,
                      ThresholdClassifier.from_config(cfg, 1.0), SEED)
    chunk = random_chunk(10, 8)
    chunk.offsets["muon"] = chunk.offsets["muon"][:-1]
    with pytest.raises(InputError, match="muon"):
        process_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg,
                      ThresholdClassifier.from_config(cfg, 1.0), SEED)


def test_empty_chunk(cfg):
    chunk = slice_chunk(random_chunk(10, 9), 3, 3)
    h = process_chunk(chunk, SampleInfo("wjets", "nominal", 8, 0, 1.0), cfg,
                      ThresholdClassifier.from_config(cfg, 1.0), SEED)
    assert h.variations == tuple(cfg.fill_variations("wjets", "nominal"))
    assert h.sumw.sum() == 0 and h.sumw.shape[-1] == cfg.binning.bins + 2


def test_workspace_reuse_gives_fresh_results(cfg):
    ws = Workspace()
    a = random_chunk(2000, 10)
    b = random_chunk(500, 11)
    sample = SampleInfo("ttbar", "nominal", 0, 0, 1.0)
    big = analyse_chunk(a, sample, cfg, SEED, workspace=ws)
    feats_big = big.region_features(0, 1).copy()
    small = analyse_chunk(b, sample, cfg, SEED, workspace=ws)
    fresh = analyse_chunk(b, sample, cfg, SEED)
    for v in range(3):
        for r in range(2):
            assert small.n(v, r) == fresh.n(v, r)
            np.testing.assert_array_equal(small.region_features(v, r),
                                          fresh.region_features(v, r))
    np.testing.assert_array_equal(analyse_chunk(a, sample, cfg, SEED).region_features(0, 1),
                                  feats_big)


def test_check_chunk_reports_bad_values_and_keeps_the_seed_physics(cfg):
    chunk = random_chunk(500, 31, mean_jets=7.0, mean_leptons=0.8, entry_start=1000)
    assert check_chunk(chunk, cfg) == ()
    pt = chunk.columns["jet_pt"]
    first = int(chunk.offsets["jet"][17])  # first jet of event 17
    pt[first] = np.nan
    pt[first + 1] = np.inf
    pt[int(chunk.offsets["jet"][40])] = -30.0
    chunk.columns["jet_eta"][int(chunk.offsets["jet"][60])] = np.nan
    chunk.columns["electron_pt"][0] = -5.0
    messages = check_chunk(chunk, cfg)
    assert any("'jet_pt'" in m and "2 NaN/inf and 1 negative" in m and "entry 1017" in m
               for m in messages)
    assert any("'jet_eta'" in m and "1 NaN/inf" in m and "entry 1060" in m for m in messages)
    assert any("'electron_pt'" in m and "1 negative" in m for m in messages)
    # the values are reported, not altered: the histograms still equal the seed's treatment
    sample = SampleInfo("ttbar", "nominal", 0, 0, 1.0)
    clf = BitsClassifier()
    assert_same_hist(process_chunk(chunk, sample, cfg, clf, SEED),
                     process_chunk_reference(chunk, sample, cfg, clf, SEED))


def test_check_chunk_rejects_absurd_multiplicities(cfg):
    limit = cfg.input_checks.max_objects_per_event
    chunk = random_chunk(20, 32, entry_start=300)
    counts = np.diff(chunk.offsets["muon"])
    for n in (limit, limit + 1):  # exactly at the limit is fine, one more is not
        counts[7] = n
        chunk.offsets["muon"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        chunk.columns["muon_pt"] = np.full(chunk.offsets["muon"][-1], 30.0, np.float32)
        if n == limit:
            assert check_chunk(chunk, cfg) == ()
    with pytest.raises(InputError, match=rf"'numbermuon': {limit + 1} objects in entry 307"):
        check_chunk(chunk, cfg)
