"""The embedded synthetic dataset: AGC-schema ntuples of the nine samples, generated and cached.

What it holds, from physics to files:

- :mod:`~agc_core.synthetic.physics`: the generator's constants and each sample's knobs;
- :mod:`~agc_core.synthetic.vectors`: four-vectors on arrays;
- :mod:`~agc_core.synthetic.partons`: the particle level (hard process, radiation, decays,
  clustering);
- :mod:`~agc_core.synthetic.filter`: the generator filter of the filtered samples;
- :mod:`~agc_core.synthetic.detector`: the detector level (jets, leptons, pile-up, trigger);
- :mod:`~agc_core.synthetic.events`: event batches in the AGC schema, in memory;
- :mod:`~agc_core.synthetic.writer`: one sample file on disk, byte-reproducible;
- :mod:`~agc_core.synthetic.dataset`: the dataset cache (generated once, checked, reused).

What it offers: the names below (:func:`ensure_dataset` is what a run calls).
"""

from agc_core.synthetic.dataset import (
    FILESET_NAME,
    MANIFEST_NAME,
    default_data_dir,
    default_generate_workers,
    ensure_dataset,
    generate_dataset,
    resolve_params,
)
from agc_core.synthetic.events import BLOCK_EVENTS, EventBatch, generate_events, iter_sample_events
from agc_core.synthetic.filter import sample_filter
from agc_core.synthetic.physics import DETECTOR, TUNES, Detector, ProcessTune, sample_tune
from agc_core.synthetic.writer import (
    COMPRESSIONS,
    GENERATOR_VERSION,
    WRITE_TIME,
    tune_digest,
    write_sample_file,
)

__all__ = [
    "BLOCK_EVENTS", "COMPRESSIONS", "DETECTOR", "FILESET_NAME", "GENERATOR_VERSION",
    "MANIFEST_NAME", "TUNES", "WRITE_TIME", "Detector", "EventBatch", "ProcessTune",
    "default_data_dir", "default_generate_workers", "ensure_dataset", "generate_dataset",
    "generate_events", "iter_sample_events", "resolve_params", "sample_filter", "sample_tune",
    "tune_digest", "write_sample_file",
]
