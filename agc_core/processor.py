"""Chunk processor: the seed's TtbarAnalysis.process on flat arrays with the numba kernels."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from agc_core.classifier import Classifier
from agc_core.config import REGIONS, AnalysisConfig
from agc_core.errors import ConfigError, InputError
from agc_core.histograms import HistArray
from agc_core.kernels.checks import scan_values
from agc_core.kernels.chunk import N_FEATURES_4J1B, N_FEATURES_4J2B, analyse_events, jer_key
from agc_core.kernels.fill import fill_region
from agc_core.kernels.kinematics import max_multiplicity
from agc_core.kernels.weights import flat_factor

log = logging.getLogger(__name__)

#: kinematic (jet pt) variations in the order the fused kernel computes them
PT_VARIATIONS = ("pt_nominal", "pt_scale_up", "pt_res_up")

#: the feature columns the kernel writes, per region (the config may order them differently)
KERNEL_FEATURES = {
    "4j1b": ("A", "lepton_pt", "leading_jet_pt", "HT"),
    "4j2b": ("trijet_mass", "trijet_avg_dR", "lepton_pt", "leading_jet_pt", "HT"),
}

#: (collection, property) columns the processor reads
#: events the fused kernel analyses at a time: its output buffers (~240 bytes per event of
#: the batch) stay bounded whatever the chunk size; the histograms are bit-identical to one
#: pass (every cell is filled in event order either way, the MLP classifies row by row)
BATCH_EVENTS = 100_000
JET_COLUMNS = ("jet_pt", "jet_eta", "jet_phi", "jet_e", "jet_btag")
LEPTON_COLUMNS = ("electron_pt", "muon_pt")


@dataclass(frozen=True)
class SampleInfo:
    """What the processor needs to know about the sample a chunk belongs to.

    Attributes:
        process: process name (``ttbar``, ``wjets``, ...).
        variation: sample variation (``nominal``, ``scaleup``, ...).
        sample_id: index of (process, variation) in ``cfg.samples`` (keys the JER draws).
        file_id: the file's identity, keys the JER draws: in a run, 63 bits of a hash of its
            ROOT UUID (:func:`agc_core.planning.file_identity`), so a file gets the same
            draws at any position in any fileset; any int for in-memory chunks.
        xsec_weight: float64 event weight ``xsec * lumi / nevts_total``.
    """

    process: str
    variation: str
    sample_id: int
    file_id: int
    xsec_weight: float


@dataclass(frozen=True)
class ChunkAnalysis:
    """Everything the fused kernel computed for one chunk (before classification).

    Attributes:
        pt_variations: names of the kinematic variations computed (``PT_VARIATIONS`` prefix).
        count: int64 (n_pt_variations, 2): selected events per (variation, region).
        event_index: int64 (n_pt_variations, 2, n_events): chunk index of selected events.
        observable: float64 (n_pt_variations, 2, n_events): HT / trijet mass (GeV).
        features: ``{region: float32 (n_pt_variations, n_events, n_features)}`` in the
            kernel's column order (:data:`KERNEL_FEATURES`).
        btag_pt: float32 (2, n_events, btag_n_jets): unscaled pt of the first selected jets,
            nominal kinematics only.
    """

    pt_variations: tuple[str, ...]
    count: np.ndarray
    event_index: np.ndarray
    observable: np.ndarray
    features: dict[str, np.ndarray]
    btag_pt: np.ndarray

    def n(self, pt_variation: int, region: int) -> int:
        """Number of selected events of a (kinematic variation, region)."""
        return int(self.count[pt_variation, region])

    def region_features(self, pt_variation: int, region: int,
                        order: tuple[str, ...] | None = None) -> np.ndarray:
        """float32 (n, n_features) features of the selected events, optionally reordered."""
        name = REGIONS[region]
        feats = self.features[name][pt_variation, : self.n(pt_variation, region)]
        if order is None or order == KERNEL_FEATURES[name]:
            return feats
        return feats[:, [KERNEL_FEATURES[name].index(f) for f in order]]


class Workspace:
    """Output buffers of the fused kernel, kept between chunks.

    Fresh multi-megabyte arrays per chunk cost page faults (the kernel writes them once);
    a workspace hands out views of buffers that only grow. Not thread-safe: use one per
    thread (:func:`thread_workspace`).
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A C-contiguous array of ``shape`` backed by the named buffer (contents undefined)."""
        size = int(np.prod(shape))
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.shape[0] < size:
            buf = np.empty(max(size, 1), dtype=dtype)
            self._buffers[name] = buf
        return buf[:size].reshape(shape)


_local = threading.local()


def thread_workspace() -> Workspace:
    """This thread's :class:`Workspace` (created on first use)."""
    ws = getattr(_local, "workspace", None)
    if ws is None:
        ws = _local.workspace = Workspace()
    return ws


def _column(chunk: Any, name: str, dtype: type) -> np.ndarray:
    try:
        values = chunk.columns[name]
    except KeyError:
        raise InputError(f"chunk has no branch '{name}' (needed by the analysis)") from None
    return np.ascontiguousarray(values, dtype=dtype)


def _offsets(chunk: Any, collection: str) -> np.ndarray:
    try:
        off = chunk.offsets[collection]
    except KeyError:
        raise InputError(f"chunk has no offsets of collection '{collection}'") from None
    off = np.ascontiguousarray(off, dtype=np.int64)
    if off.shape[0] and off[0] != 0:
        off = off - off[0]
    return off


def kernel_inputs(chunk: Any) -> tuple[np.ndarray, ...]:
    """The chunk's analysis columns as contiguous arrays of the kernels' dtypes.

    Returns:
        (jet offsets, jet pt, eta, phi, e, btag, electron offsets, electron pt, muon offsets,
        muon pt): offsets int64 starting at 0, columns float32.

    Raises:
        InputError: a column or offsets array is missing or their lengths disagree.
    """
    jet_off = _offsets(chunk, "jet")
    jets = [_column(chunk, name, np.float32) for name in JET_COLUMNS]
    el_off = _offsets(chunk, "electron")
    mu_off = _offsets(chunk, "muon")
    el_pt = _column(chunk, "electron_pt", np.float32)
    mu_pt = _column(chunk, "muon_pt", np.float32)
    n = jet_off.shape[0]
    for name, off, cols in (("jet", jet_off, jets), ("electron", el_off, [el_pt]),
                            ("muon", mu_off, [mu_pt])):
        if off.shape[0] != n:
            raise InputError(f"chunk: '{name}' offsets have {off.shape[0] - 1} events, "
                             f"'jet' offsets {n - 1}")
        for c in cols:
            if c.shape[0] != (off[-1] if off.shape[0] else 0):
                raise InputError(f"chunk: a '{name}' column has {c.shape[0]} values but its "
                                 f"offsets end at {off[-1]}")
    return (jet_off, *jets, el_off, el_pt, mu_off, mu_pt)


def _check_features(cfg: AnalysisConfig) -> None:
    for region in cfg.regions:
        unknown = set(region.features) - set(KERNEL_FEATURES[region.name])
        if unknown or len(region.features) != len(KERNEL_FEATURES[region.name]):
            raise ConfigError(f"{cfg.path}: key 'regions.{region.name}.features' must be a "
                              f"permutation of {list(KERNEL_FEATURES[region.name])}")


def analyse_chunk(chunk: Any, sample: SampleInfo, cfg: AnalysisConfig, seed: int,
                  pt_variations: bool | None = None, workspace: Workspace | None = None
                  ) -> ChunkAnalysis:
    """Run the fused kernel: selection, regions, observables, features for all pt variations.

    Args:
        chunk: an ``agc_core.io.Chunk`` (columns + offsets).
        sample: the chunk's sample.
        cfg: the analysis configuration.
        seed: seed of the JER draws.
        pt_variations: compute pt_scale_up and pt_res_up too; default: for nominal samples.
        workspace: reusable output buffers; the result's arrays are views into it, valid
            until its next use. Default: fresh arrays.

    Returns:
        The :class:`ChunkAnalysis`.
    """
    _check_features(cfg)
    inputs = kernel_inputs(chunk)
    n_events = inputs[0].shape[0] - 1
    sel, syst = cfg.selection, cfg.systematics
    if pt_variations is None:
        pt_variations = sample.variation == "nominal"
    scale = np.array([1.0, syst.jes_factor] if pt_variations else [1.0], dtype=np.float64)
    n_var = 3 if pt_variations else 1
    ws = workspace if workspace is not None else Workspace()
    count = np.zeros((n_var, len(REGIONS)), dtype=np.int64)
    event_index = ws.array("event_index", (n_var, len(REGIONS), n_events), np.int64)
    observable = ws.array("observable", (n_var, len(REGIONS), n_events), np.float64)
    feat_1b = ws.array("features_4j1b", (n_var, n_events, N_FEATURES_4J1B), np.float32)
    feat_2b = ws.array("features_4j2b", (n_var, n_events, N_FEATURES_4J2B), np.float32)
    btag_pt = ws.array("btag_pt", (len(REGIONS), n_events, syst.btag_n_jets), np.float32)
    if n_events > 0:
        analyse_events(
            *inputs, scale, pt_variations,
            np.uint64(jer_key(seed, sample.sample_id, sample.file_id)), syst.jer_width,
            int(getattr(chunk, "entry_start", 0)),
            np.float32(sel.electron_pt_min), np.float32(sel.muon_pt_min),
            float(sel.jet_pt_min), sel.n_leptons, sel.n_jets_min,
            np.float32(sel.btag_threshold), sel.n_btag_min,
            count, event_index, observable, feat_1b, feat_2b, btag_pt,
        )
    return ChunkAnalysis(PT_VARIATIONS[:n_var], count, event_index, observable,
                         {"4j1b": feat_1b, "4j2b": feat_2b}, btag_pt)


def _classify(classifier: Classifier, region: str, features: np.ndarray) -> np.ndarray:
    cls = np.asarray(classifier.classify(region, features))
    if cls.shape != (features.shape[0],):
        raise ValueError(f"classifier returned shape {cls.shape} for {features.shape[0]} "
                         f"events of region {region}")
    return np.ascontiguousarray(cls, dtype=np.int64)


def _entry_of(chunk: Any, column: str, flat_index: int) -> int:
    """The file entry holding element ``flat_index`` of ``column`` (jagged or scalar)."""
    offsets = chunk.offsets.get(column.split("_", 1)[0])
    event = flat_index if offsets is None else int(
        np.searchsorted(offsets, flat_index, side="right")) - 1
    return chunk.entry_start + event


def check_chunk(chunk: Any, cfg: AnalysisConfig) -> tuple[str, ...]:
    """Sanity checks of a chunk read, before processing (``cfg.input_checks``).

    NaN/inf values in any float column, and negative values in the columns of
    ``input_checks.nonnegative``, are reported (the seed's cuts drop NaN and negative pt and
    keep +inf, and so do we: the physics is unchanged). A collection with more objects in one
    event than ``input_checks.max_objects_per_event`` is taken for corrupt input.

    Args:
        chunk: columns + offsets (``agc_core.io.Chunk``).
        cfg: the analysis configuration.

    Returns:
        One message per column with suspicious values, naming the branch, the counts and the
        file entry of the first one (empty when all is well).

    Raises:
        InputError: naming the counter branch and the entry of an absurd multiplicity.
    """
    limit = cfg.input_checks.max_objects_per_event
    for coll, offsets in chunk.offsets.items():
        if max_multiplicity(offsets) > limit:
            counts = np.diff(offsets)
            event = int(np.argmax(counts))
            raise InputError(
                f"branch 'number{coll}': {int(counts[event])} objects in entry "
                f"{chunk.entry_start + event} (more than input_checks."
                f"max_objects_per_event = {limit}): corrupt input?")
    messages = []
    for name, values in chunk.columns.items():
        if values.dtype.kind != "f" or values.size == 0:
            continue
        n_bad, n_negative, first = scan_values(values, name in cfg.input_checks.nonnegative)
        if first < 0:
            continue
        what = [f"{n} {label}" for n, label in ((n_bad, "NaN/inf"), (n_negative, "negative"))
                if n]
        messages.append(f"branch '{name}': {' and '.join(what)} value(s), the first in entry "
                        f"{_entry_of(chunk, name, first)}")
    return tuple(messages)


@dataclass(frozen=True)
class _EventBatch:
    """Events [lo, hi) of a chunk as views (what :func:`analyse_chunk` reads of a chunk)."""

    columns: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    entry_start: int


def event_batches(chunk: Any, size: int = BATCH_EVENTS) -> list[Any]:
    """The chunk itself, or consecutive views of at most ``size`` events each (global entry
    numbers, hence JER keys, unchanged)."""
    offsets = chunk.offsets
    n = (len(offsets["jet"]) - 1) if "jet" in offsets else int(getattr(chunk, "n_events", 0))
    if n <= size:
        return [chunk]
    jagged = {}  # column -> its collection's offsets (a column as long as their content)
    for name, values in chunk.columns.items():
        o = offsets.get(name.split("_", 1)[0])
        if o is not None and len(o) == n + 1 and len(values) == o[-1] - o[0]:
            jagged[name] = o
    out = []
    for lo in range(0, n, size):
        hi = min(n, lo + size)
        cols = {}
        for name, values in chunk.columns.items():
            o = jagged.get(name)
            cols[name] = values[o[lo] - o[0]:o[hi] - o[0]] if o is not None else values[lo:hi]
        out.append(_EventBatch(cols, {c: o[lo:hi + 1] for c, o in offsets.items()},
                               int(getattr(chunk, "entry_start", 0)) + lo))
    return out


def process_chunk(chunk: Any, sample: SampleInfo, cfg: AnalysisConfig, classifier: Classifier,
                  seed: int) -> HistArray:
    """Fill the seed's histograms for one chunk of one sample.

    One fused kernel pass computes every kinematic variation; the classifier is called once
    per (kinematic variation, region) on all selected events; one fill pass per (kinematic
    variation, region) adds the entry to every weight variation.

    Args:
        chunk: columns + offsets (``agc_core.io.Chunk``).
        sample: the chunk's sample.
        cfg: the analysis configuration.
        classifier: has ``classify(region, float32 features) -> int 0/1``.
        seed: seed of the JER draws.

    Returns:
        A :class:`HistArray` over ``cfg.fill_variations(process, variation)``.
    """
    variations = cfg.fill_variations(sample.process, sample.variation)
    hist = HistArray.empty(variations, cfg)
    for batch in event_batches(chunk, BATCH_EVENTS):  # bounded kernel buffers
        _fill_batch(hist, batch, sample, cfg, classifier, seed)
    return hist


def _fill_batch(hist: HistArray, chunk: Any, sample: SampleInfo, cfg: AnalysisConfig,
                classifier: Classifier, seed: int) -> None:
    """Add one batch of events to ``hist`` (in place): fused kernel, MLP, fill."""
    variations = cfg.fill_variations(sample.process, sample.variation)
    result = analyse_chunk(chunk, sample, cfg, seed, workspace=thread_workspace())
    syst, b = cfg.systematics, cfg.binning
    w0 = float(sample.xsec_weight)
    flat = variations.index("scale_var_up") if "scale_var_up" in variations else -1
    m = np.float32(syst.wjets_magnitude)
    flat_up, flat_down = flat_factor(m), flat_factor(-m)
    btag = variations.index("btag_var_0_up") if "btag_var_0_up" in variations else -1
    if btag >= 0:
        expected = [f"btag_var_{i}_{d}" for i in range(syst.btag_n_jets) for d in ("up", "down")]
        if variations[btag: btag + len(expected)] != expected:
            raise ConfigError(f"{cfg.path}: unexpected order of b-tag variations {variations}")
    no_btag = np.empty((0, 0), dtype=np.float32)
    order = {r.name: r.features for r in cfg.regions}
    for iv, pt_var in enumerate(result.pt_variations):
        own = variations.index(sample.variation if pt_var == "pt_nominal" else pt_var)
        nominal = pt_var == "pt_nominal" and sample.variation == "nominal"
        for ir, region in enumerate(REGIONS):
            n = result.n(iv, ir)
            if n == 0:
                continue
            cls = _classify(classifier, region, result.region_features(iv, ir, order[region]))
            fill_region(hist.sumw, hist.sumw2, ir, result.observable[iv, ir], cls, n,
                        float(b.low), float(b.high), w0, own,
                        flat if nominal else -1, flat_up, flat_down,
                        btag if nominal else -1,
                        result.btag_pt[ir] if nominal else no_btag,
                        float(syst.btag_magnitude), np.float32(syst.btag_pt_ref))


def compute_features(chunk: Any, sample: SampleInfo, cfg: AnalysisConfig, seed: int
                     ) -> dict[str, np.ndarray]:
    """MLP features of the selected events with nominal kinematics (for training).

    Returns:
        ``{region: float32 (n, n_features)}`` with columns in ``cfg.regions`` order.
    """
    result = analyse_chunk(chunk, sample, cfg, seed, pt_variations=False)
    return {r.name: np.array(result.region_features(0, ir, r.features), order="C")
            for ir, r in enumerate(cfg.regions)}
