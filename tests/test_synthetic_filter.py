"""The generator-level W+jets filter (``dataset.generator_filter``): unbiased, normalized by the
generated events, declared in the fileset."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import uproot

from agc_core import synthetic
from agc_core.fileset import load_fileset
from agc_core.fixtures import chunk_from_batches
from agc_core.planning import plan_tasks
from agc_core.processor import PT_VARIATIONS, SampleInfo, analyse_chunk

FILE_EVENTS = 40_000     # unfiltered: multiplier x as many generated; filtered: passing
MAX_LOST = 0.005         # selected events the filter may drop (fraction of the selected)


@pytest.fixture(scope="module")
def gen_filter(cfg):
    gf = synthetic.sample_filter(cfg.dataset.generator_filter, "wjets")
    assert gf is not None and gf.multiplier > 1
    return gf


def analysed(batches, cfg):
    chunk = chunk_from_batches(batches, cfg)
    info = SampleInfo("wjets", "nominal", cfg.samples.index(("wjets", "nominal")), 0, 1.0)
    return chunk, analyse_chunk(chunk, info, cfg, cfg.dataset.seed, pt_variations=True)


def test_filter_drops_no_selected_event(cfg, gen_filter):
    """Unfiltered W+jets with the filter's verdict per event: the selected events (nominal
    and the jet-energy variations, both regions) that the filter would have dropped are a
    negligible fraction; and the filtered sample (other random numbers) selects as many per
    generated event as the unfiltered one, within statistics."""
    seed = cfg.dataset.seed
    flagged = list(synthetic.iter_sample_events("wjets", "nominal", FILE_EVENTS, seed, cfg,
                                                flag_filter=True))
    n_full = sum(b.n_events for b in flagged)
    assert n_full == sum(b.n_generated for b in flagged) == FILE_EVENTS * gen_filter.multiplier
    passes = np.concatenate([b.filter_pass for b in flagged])
    _, full = analysed(flagged, cfg)
    filtered = list(synthetic.iter_sample_events("wjets", "nominal", FILE_EVENTS, seed, cfg))
    assert all(b.filter_pass is None for b in filtered)
    n_skim = sum(b.n_generated for b in filtered)
    chunk, skim = analysed(filtered, cfg)
    assert chunk.n_events == FILE_EVENTS < n_skim
    print(f"\ngenerator filter: {passes.mean():.4f} of {n_full:,} generated W+jets events "
          f"pass; the filtered sample's {FILE_EVENTS:,} events stand for {n_skim:,} generated "
          f"({FILE_EVENTS / n_skim:.4f})")
    assert FILE_EVENTS / n_skim == pytest.approx(passes.mean(), abs=4 * math.sqrt(
        passes.mean() / n_skim))
    for v, variation in enumerate(PT_VARIATIONS):
        lost_n = []
        for r, region in enumerate(("4j1b", "4j2b")):
            n = full.n(v, r)
            lost = int((~passes[full.event_index[v, r, :n]]).sum())
            lost_n.append((lost, n))
            m = skim.n(v, r)
            # selected per generated event, filtered vs unfiltered
            pull = (m / n_skim - n / n_full) / math.sqrt(m / n_skim ** 2 + n / n_full ** 2)
            print(f"  {region} {variation:12s} selected {n:5d}, failing the filter {lost:3d} "
                  f"({lost / n:.2%}); filtered sample {m:5d} (pull {pull:+.2f})")
            assert abs(pull) < 4.0
        lost, n = (sum(x) for x in zip(*lost_n, strict=True))
        print(f"  both regions {variation:12s} failing the filter {lost / n:.2%} of the selected "
              f"(at most {MAX_LOST:.1%})")
        assert lost <= MAX_LOST * n

def test_filtered_file_normalized_by_generated_events(tmp_path, cfg, gen_filter, caplog):
    """A filtered file holds fewer entries than it was generated from: the fileset's nevts is
    the generated count (the normalization), the entries are declared beside it, and planning
    takes them without a warning."""
    path = synthetic.generate_dataset(tmp_path, events_per_file=1000, files_per_sample=1,
                                      seed=3, cfg=cfg, progress=False)
    raw = json.loads(path.read_text())
    (w,) = raw["wjets"]["nominal"]["files"]
    assert 5 * 1000 < w["nevts"] < 20 * 1000   # about 1000 / the filter's efficiency
    with uproot.open(tmp_path / w["path"]) as f:
        assert f["events"].num_entries == w["entries"] == 1000 < w["nevts"]
    (t,) = raw["ttbar"]["nominal"]["files"]
    assert t["nevts"] == 1000 and "entries" not in t
    samples = {s.process: s for s in load_fileset(path, cfg) if s.variation == "nominal"}
    xsec = cfg.xsec_pb["wjets"]
    assert samples["wjets"].xsec_weight == pytest.approx(xsec * cfg.luminosity_pb / w["nevts"])
    with caplog.at_level(logging.WARNING, logger="agc_core.planning"):
        tasks, failures = plan_tasks(list(samples.values()), cfg.analysis_branches, 500,
                                     cfg.dataset.tree)
    assert not failures and not caplog.records
    assert sum(t.entry_stop - t.entry_start for t in tasks if t.process == "wjets") == 1000
    manifest = json.loads((tmp_path / synthetic.MANIFEST_NAME).read_text())
    entry = manifest["files"][w["path"]]
    assert entry["generated"] == w["nevts"] and entry["key"]["filter"]["multiplier"] == (
        gen_filter.multiplier)
    # reused as it is (the manifest's entries are the file's)
    synthetic.ensure_dataset(tmp_path, events_per_file=1000, files_per_sample=1, seed=3,
                             cfg=cfg, progress=False)
    assert json.loads(path.read_text()) == raw
