"""Tests of agc_core.planning: what a run will read is stated before it starts."""

from __future__ import annotations

from agc_core import io
from agc_core.fileset import load_fileset
from agc_core.planning import EntriesCache, format_bytes, plan_tasks, summarize_plan


def test_plan_states_files_events_and_compressed_bytes(small_dataset, small_run, cfg,
                                                       tmp_path):
    samples = load_fileset(small_dataset, cfg)
    branches = cfg.analysis_branches
    cache = EntriesCache(tmp_path / "cache.json")
    tasks, failures = plan_tasks(samples, branches, 700, cache=cache)
    assert not failures
    plan = summarize_plan(tasks)
    paths = [f.path for s in samples for f in s.files]
    assert plan.files == len(paths) == 9 and plan.chunks == len(tasks)
    assert plan.events == sum(io.num_entries(p) for p in paths) == 9 * 2000
    assert plan.compressed_bytes == sum(io.check_file(p, branches).compressed_bytes
                                        for p in paths)
    cache.save()
    again, _ = plan_tasks(samples, branches, 700, cache=EntriesCache(tmp_path / "cache.json"))
    assert again == tasks  # the bytes come back from the cache too
    log = (small_run.output_dir / "agc.log").read_text()
    assert f"plan: {small_dataset}: 9 samples, {plan.describe()} to read" in log
    assert "9 files, 18,000 events, " in plan.describe()


def test_format_bytes():
    assert format_bytes(3.44e12) == "3.44 TB"
    assert format_bytes(12_345_678) == "12.3 MB"
    assert format_bytes(512) == "512 B"


def test_planning_reports_each_file_once(small_dataset, cfg, tmp_path):
    """The progress callback counts every file once, planned or failed (a missing one here),
    whether planned from the caches or inspected."""
    import dataclasses

    samples = load_fileset(small_dataset, cfg)
    missing = dataclasses.replace(samples[0].files[0], path=str(tmp_path / "missing.root"))
    samples[0] = dataclasses.replace(samples[0], files=(*samples[0].files, missing))
    n_files = sum(len(s.files) for s in samples)
    seen = []
    tasks, failures = plan_tasks(samples, cfg.analysis_branches, 700,
                                 cache=EntriesCache(tmp_path / "plans"), on_planned=seen.append)
    assert len(failures) == 1 and "missing.root" in failures[0].path
    assert sum(seen) == n_files == 10 and tasks
