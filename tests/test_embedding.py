"""docs/embedding.md: its example runs as written and gives what our own processor gives."""

from __future__ import annotations

import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from agc_core import io
from agc_core.fixtures import random_chunk
from agc_core.processor import SampleInfo, analyse_chunk

DOC = Path(__file__).resolve().parents[1] / "docs" / "embedding.md"
EVENTS = 3000


def write_ntuple(path: Path) -> None:
    """A file in the AGC ntuple schema (numberjet, jet_pt, ...) from random events."""
    chunk = random_chunk(EVENTS, 5, mean_jets=7.0, mean_leptons=0.6)

    def jagged(collection: str, props: tuple[str, ...]) -> ak.Array:
        counts = np.diff(chunk.offsets[collection])
        return ak.zip({p: ak.unflatten(chunk.columns[f"{collection}_{p}"], counts)
                       for p in props})

    data = {"jet": jagged("jet", ("pt", "eta", "phi", "e", "btag")),
            "electron": jagged("electron", ("pt",)), "muon": jagged("muon", ("pt",))}
    with uproot.recreate(path) as f:
        tree = f.mktree("events", {k: v.type.content for k, v in data.items()},
                        counter_name=lambda c: f"number{c}",
                        field_name=lambda outer, inner: f"{outer}_{inner}")
        tree.extend(data)


@pytest.fixture(scope="module")
def namespace(tmp_path_factory) -> dict:
    """The doc's python blocks, run in order in one namespace, next to ntuple.root."""
    folder = tmp_path_factory.mktemp("embedding")
    write_ntuple(folder / "ntuple.root")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3
    ns: dict = {"__name__": "embedding_doc"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), ns)  # our own documentation
    ns["folder"] = folder
    return ns


def ours(folder: Path, cfg, start: int = 0):
    chunk = io.read_chunk(folder / "ntuple.root", cfg.analysis_branches, start, EVENTS)
    return analyse_chunk(chunk, SampleInfo("ttbar", "nominal", 0, 0, 1.0), cfg, 42)


def assert_same(result: dict, expected) -> None:
    np.testing.assert_array_equal(result["count"], expected.count)
    assert expected.count.sum() > 500
    for v in range(3):
        for r in range(2):
            n = expected.n(v, r)
            np.testing.assert_array_equal(result["event_index"][v, r, :n],
                                          expected.event_index[v, r, :n])
            np.testing.assert_array_equal(result["observable"][v, r, :n],
                                          expected.observable[v, r, :n])
            feats = result[f"features_{('4j1b', '4j2b')[r]}"][v, :n]
            np.testing.assert_array_equal(feats, expected.region_features(v, r))


def test_doc_example_equals_the_processor(namespace, cfg):
    assert_same(namespace["result"], ours(namespace["folder"], cfg))
    ht = namespace["ht"]
    assert ak.sum(~ak.is_none(ht)) == namespace["result"]["count"][0, 0]


def test_sliced_events_without_copy(namespace, cfg):
    """events[1000:] keeps its whole buffer: offsets not starting at 0 work as they are."""
    events = namespace["events"][1000:]
    off, content = namespace["offsets_and_content"](events.jet_pt)
    assert off[0] > 0
    assert np.shares_memory(content, ak.to_layout(namespace["events"].jet_pt).content.data)
    assert_same(namespace["analyse"](events, entry_start=1000),
                ours(namespace["folder"], cfg, 1000))
