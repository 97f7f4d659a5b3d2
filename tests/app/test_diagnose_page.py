"""AppTest of the Diagnose page with a finished diagnosis of a tiny model (one injected wide depthwise channel)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job
from tests.analysis.test_diagnosis import PER_TENSOR, tiny_depthwise

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished():
    from qcore.analysis.diagnosis import diagnose

    result = diagnose(tiny_depthwise(40.0), PER_TENSOR, calib_size=64, eval_size=128, probe_images=32)
    job = Job("diagnose", lambda j: result).start()
    job.wait()
    return job


def open_page(job, lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["diagnose_job"] = job
    at.session_state["lang_choice"] = lang
    at.switch_page("views/diagnose.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_split_the_causes_and_a_cause_with_its_evidence_and_learn_link(finished):
    at = open_page(finished)
    report = finished.snapshot()["result"].report
    labels = {m.label: m for m in at.metric}
    assert {"FP32 top-1", "Quantized", "Weights only", "Activations only"} <= set(labels)
    assert labels["Weights only"].value == f"{report.weights_only_accuracy:.2%}"
    per_layer = at.dataframe[0].value
    assert list(per_layer["layer"]) == [x.name for x in report.layers]
    assert list(per_layer["weights only (dB)"].dropna()) == [x.weight_sqnr_db for x in report.layers
                                                             if x.weight_sqnr_db is not None]
    causes = at.dataframe[1].value
    assert list(causes["layer"]) == [c.layer for c in report.causes]
    assert "unequal weight channels" in set(causes["cause"])
    at.selectbox(key="diag_cause_en").set_value(next(i for i, c in enumerate(report.causes)
                                                  if c.kind == "channel_spread")).run()
    evidence = at.dataframe[2].value
    assert "widest / median channel range" in set(evidence["evidence"])
    assert any("Learn" in str(p.proto.label) for p in at.get("page_link"))


def test_apply_fix_re_measures_and_shows_before_and_after(finished):
    at = open_page(finished)
    report = finished.snapshot()["result"].report
    at.selectbox(key="diag_cause_en").set_value(next(i for i, c in enumerate(report.causes)
                                                  if c.kind == "channel_spread")).run()
    at.button(key="diag_apply").click().run()
    snap = at.session_state["diagnose_fix_job"].wait(120)
    assert snap["status"] == "done", snap["error"]
    at.run()
    result = snap["result"]
    metrics = {m.label: m for m in at.metric}
    assert metrics["Before"].value == f"{report.accuracy:.2%}"
    assert metrics["After"].value == f"{result.after:.2%}"
    assert metrics["After"].delta.startswith(f"{result.delta * 100:+.2f}")


def test_the_page_in_korean(finished):
    at = open_page(finished, "ko")
    labels = {m.label for m in at.metric}
    assert "가중치만 양자화" in labels
    assert "가중치 채널 범위 불균형" in set(at.dataframe[1].value["원인"])
    assert any("가중치 채널 범위 불균형" in o for o in at.selectbox(key="diag_cause_ko").options)


def test_an_outlier_cause_shows_its_histogram_with_both_ranges_and_links_to_clipping(finished):
    """A cause from the outlier detector on constructed statistics (the tiny model has none), placed first."""
    from qcore.analysis import diagnosis_causes as dc
    from qcore.quant.qconfig import LayerConfig
    from qcore.quant.stats import TensorStats

    stats = TensorStats("0")
    stats.update(torch.cat([torch.randn(20_000, generator=torch.Generator().manual_seed(0)), torch.tensor([60.0, 70.0])]))
    outlier = dc.outlier_cause("0", stats, LayerConfig(act_bits=4).act_scheme(), "max")
    d = finished.snapshot()["result"]
    job = Job("diagnose", lambda j: replace(d, report=replace(d.report, causes=[outlier, *d.report.causes]))).start()
    job.wait()
    at = open_page(job)
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    figure = json.loads(charts[0].proto.spec)
    assert {tr.get("name") for tr in figure["data"]} >= {"max", dict(outlier.fix.changes)["act_method"]}
    assert any("4. Clipping vs rounding" in str(p.proto.label) for p in at.get("page_link"))
