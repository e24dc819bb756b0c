"""The seed's signal/background network as a torch module (3 linear layers, ReLU, sigmoid)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from agc_core.kernels.mlp import HIDDEN_1, HIDDEN_2

log = logging.getLogger(__name__)


class Net(nn.Module):
    """The seed notebook's ``Net`` (same layer names, so state_dicts are interchangeable).

    ``forward`` returns the sigmoid output as the seed does; :meth:`logits` returns the
    pre-sigmoid value (used for training with ``BCEWithLogitsLoss`` and for inference).
    Inputs are standardized features (see ``models.weights``), float32 of shape (n, n_inputs).
    """

    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(n_inputs, HIDDEN_1)
        self.fc2 = nn.Linear(HIDDEN_1, HIDDEN_2)
        self.fc3 = nn.Linear(HIDDEN_2, 1)

    @property
    def n_inputs(self) -> int:
        """Number of input features."""
        return self.fc1.in_features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output of shape (n, 1)."""
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid output of shape (n, 1), as the seed's ``Net.forward``."""
        return torch.sigmoid(self.logits(x))

