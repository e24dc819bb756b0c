"""Numba kernels of the AGC ttbar analysis on flat arrays plus offsets (numpy + numba only)."""
