"""The generator filter: which generated events a filtered sample keeps (leptons and jets
at the particle level), and which samples are filtered."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from agc_core.config import GeneratorFilter
from agc_core.synthetic.partons import _Partons, _VisibleLeptons
from agc_core.synthetic.physics import FLAV_LIGHT
from agc_core.synthetic.vectors import P4


def _take(obj: Any, keep: np.ndarray) -> Any:
    """The events ``keep`` (a boolean mask or indices on the first axis) of per-event arrays,
    of a P4 or of a dataclass of them (parton slots, a hard process's output, visible
    leptons)."""
    if keep.dtype == np.bool_:
        keep = np.flatnonzero(keep)
    if isinstance(obj, np.ndarray):
        return obj.take(keep, axis=0)
    if isinstance(obj, P4):
        return P4(*(a.take(keep, axis=0) for a in obj))
    return type(obj)(*(_take(getattr(obj, f.name), keep) for f in dataclasses.fields(obj)))


def _lepton_filter(vis: _VisibleLeptons, quarks: list[_Partons], gen_filter: GeneratorFilter
                   ) -> np.ndarray:
    """Generator filter, lepton stage: an event may give the one selected lepton.

    True where a visible prompt lepton (from a W, or a tau's leptonic decay) is above
    ``lepton_pt_min`` within ``lepton_eta_max``, or where a b or c parton above
    ``lepton_pt_min`` may give a non-prompt lepton.
    """
    prompt = (vis.valid & (vis.pt > gen_filter.lepton_pt_min)
              & (np.abs(vis.eta) < gen_filter.lepton_eta_max)).any(axis=1)
    for q in quarks:
        prompt |= (q.valid & (q.flavour != FLAV_LIGHT)
                   & (q.pt > gen_filter.lepton_pt_min)).any(axis=1)
    return prompt


def _jet_filter(blocks: list[_Partons], gen_filter: GeneratorFilter) -> np.ndarray:
    """Generator filter, parton stage: at least ``min_jets`` jet candidates (quarks, radiation
    partons and their FSR gluons, tau jets, pileup jets) above ``jet_pt_min``, before
    clustering (which can only merge them)."""
    return sum(((b.valid & (b.pt > gen_filter.jet_pt_min)).sum(axis=1) for b in blocks),
               start=np.zeros(blocks[0].valid.shape[0], dtype=np.int64)) >= gen_filter.min_jets




def sample_filter(gen_filter: GeneratorFilter | None, process: str) -> GeneratorFilter | None:
    """The generator filter of a process's samples (None: not filtered)."""
    return gen_filter if gen_filter is not None and gen_filter.process == process else None
