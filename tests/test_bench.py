"""Smoke tests of ``python -m agc_core bench``: every cheap section runs and prints its table."""

from __future__ import annotations

import pytest

from agc_core.cli import main
from agc_core.synthetic import generate_dataset


@pytest.fixture(scope="module")
def tiny_fileset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_data")
    return generate_dataset(out, events_per_file=2000, files_per_sample=1, seed=5)


def test_kernels_section(capsys):
    rc = main(["bench", "--what", "kernels", "--events", "3000", "--reference-events", "500",
               "--mix-events", "0", "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "process_chunk, all variations" in out and "speedup" in out


def test_mlp_section(capsys):
    rc = main(["bench", "--what", "mlp", "--events", "3000", "--mix-events", "2000",
               "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "numba MLP" in out and "sample mix" in out


def test_io_section(capsys, tiny_fileset):
    rc = main(["bench", "--what", "io", "--fileset", str(tiny_fileset), "--repeat", "1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "agc_core" in out and "uproot_ak (zlib)" in out and "50 %" in out
    assert "uproot_ak (libdeflate)" in out
