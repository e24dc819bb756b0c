"""The signal/background MLP: torch network definition, training and shipped weights."""
