"""The signal/background MLP (installed as ``agc_core.models``): :mod:`~agc_core.models.net`
(the torch network), :mod:`~agc_core.models.weights` (the weights and their numba form, the
shipped files), training: :mod:`~agc_core.models.features` (labelled features from our kernels),
:mod:`~agc_core.models.metrics` (ROC, accuracy, balanced weights),
:mod:`~agc_core.models.train` (:func:`~agc_core.models.train.train`, one network per region)."""
