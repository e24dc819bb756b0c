"""Tests of agc_core.bench.sections: the registry behind ``bench --what``."""

from __future__ import annotations

from agc_core.bench import sections
from agc_core.bench.table import BenchTable


def test_sections_follow_their_modules_and_absent_ones_are_skipped(monkeypatch):
    monkeypatch.setattr(sections, "SECTION_MODULES",
                        (*sections.SECTION_MODULES, "agc_core.bench.not_written_yet"))
    names = sections.section_names()
    assert names[:3] == ["kernels", "e2e", "io"]
    assert {"mlp", "fit"} <= set(names)


def test_a_registered_section_is_offered_and_run(monkeypatch, capsys):
    from types import SimpleNamespace

    monkeypatch.setattr(sections, "SECTIONS", dict(sections.SECTIONS))

    @sections.register_section("toy", "a section registered by a test")
    def toy(args, cfg):
        return BenchTable("toy", ["what", "value"], [["answer", 42.0]])

    assert sections.section_names()[-1] == "toy"  # not in SECTION_MODULES: last
    assert sections.run_bench(SimpleNamespace(what=["toy"])) == 0
    assert "answer" in capsys.readouterr().out
