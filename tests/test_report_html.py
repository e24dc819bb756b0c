"""Tests of the inference stage end to end: run -> fit -> report.html, the summary, metrics,
the fit CLI, and how a failed fit is reported."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace

from fit_inputs import embedded_run, reference_inputs

from agc_core import inference, report_html
from agc_core.cli import main
from agc_core.report import format_summary


def test_run_ends_with_the_fit_and_the_report():
    run = embedded_run().run
    out = run.output_dir
    assert run.exit_code == 0
    inference = run.stage_results["fit_result"]
    assert inference.ok and inference.fit.diagnostics.valid
    summary = format_summary(run)
    assert re.search(r"fit\s+: ttbar_norm = \d\.\d{4} \+- \d\.\d{4} \(HESSE\), -\d\.\d{4} / "
                     r"\+\d\.\d{4} \(MINOS\)", summary)
    for name in ("workspace.json", "fit_results.json", "report.html"):
        assert (out / name).exists(), name
        assert name in run.outputs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fit"]["poi"] == "ttbar_norm" and metrics["fit"]["ok"] is True
    assert metrics["fit"]["hesse"] > 0 and metrics["fit"]["minos"][0] < 0
    text = (out / "report.html").read_text()
    assert "ttbar_norm" in text and "MINOS" in text and "goodness of fit" in text
    assert "events processed" in text and "MLP accuracy" in text
    assert "Post-fit yields" in text


def test_fit_cli_on_the_real_cms_histograms(tmp_path, capsys):
    ref = reference_inputs()
    code = main(["-q", "fit", "--histograms", str(ref.root), "--no-ranking", "--scan",
                 "--output-dir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "agc_core fit: ttbar_norm = 0.97" in printed
    record = json.loads((tmp_path / "fit_results.json").read_text())
    assert record["ok"] and len(record["scan"]["values"]) == 11 and "ranking" not in record
    text = (tmp_path / "report.html").read_text()
    # self-contained: every image is embedded, nothing is fetched
    images = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(images) >= 6
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|//)', text)


def test_failed_fit_is_reported(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise inference.FitError(f"{kwargs.get('what', args[-1])} did not converge: test")

    monkeypatch.setattr(inference.mle, "minimize", fail)
    result = inference.run_inference(embedded_run().root, tmp_path, ranking=False, scan=False,
                                     plots=False)
    assert not result.ok and result.fit is None
    assert result.errors[0] == "the best fit did not converge: test"
    assert result.summary_line().startswith("FIT FAILED: the best fit did not converge")
    path = report_html.write_report(tmp_path / "report.html", inference=result)
    assert "FIT FAILED" in path.read_text()
    record = json.loads((tmp_path / "fit_results.json").read_text())
    assert record["ok"] is False and record["errors"]
    # a run whose fit failed: exit code 1, said in the summary and the report
    run = embedded_run().run
    failed = replace(run, stage_results={**run.stage_results, "fit_result": result,
                                         "fit_error": result.errors[0]})
    assert failed.exit_code == 1
    assert "FIT FAILED       : the best fit did not converge" in format_summary(failed)
    page = report_html.write_report(tmp_path / "run.html", inference=result, run=failed)
    assert "FIT FAILED" in page.read_text()


def test_no_fit_and_user_errors(tmp_path, capsys):
    assert main(["fit", "--histograms", str(tmp_path / "missing.root")]) == 2
    assert "histogram file not found" in capsys.readouterr().err
    bad = tmp_path / "fit.yaml"
    bad.write_text("measurement: x\nunknown_key: 1\n")
    assert main(["fit", "--histograms", str(embedded_run().root), "--fit-config",
                 str(bad)]) == 2
    assert "unknown key 'unknown_key' (line 2)" in capsys.readouterr().err


def test_inference_outputs(tmp_path):
    result = inference.run_inference(embedded_run().full, tmp_path, ranking=False, scan=False,
                                     plots=True)
    assert result.ok
    assert len(result.channels) == 2
    names = {p.name for p in result.plots}
    assert {"fit_pulls.png", "fit_correlations.png"} <= names
    assert len([n for n in names if n.startswith("fit_postfit_")]) == len(result.channels)
    for table in result.postfit.values():
        assert table["sum_unc"] > 0 and len(table["total"]) == 11


def test_report_opens_with_the_postfit_pictures_and_the_pulls(tmp_path):
    result = inference.run_inference(embedded_run().full, tmp_path, ranking=False, scan=False,
                               plots=True)
    text = report_html.write_report(tmp_path / "report.html", inference=result).read_text()
    images = re.findall(r'<img alt="([^"]+)"', text)
    first = images[:len(result.channels) + 1]
    assert sorted(first) == sorted([f"fit_postfit_{c.replace(' ', '_')}.png"
                                    for c in result.channels] + ["fit_pulls.png"])
    # above every table, right under the ttbar_norm line; each picture embedded once
    assert text.index("class='poi'") < text.index("<img") < text.index("<table")
    assert len(images) == len(set(images)) == len(result.plots)
