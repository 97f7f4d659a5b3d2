"""AppTest of the Graph page with a finished graph job of the sidebar's default model (fm_resnet) in session state."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.run.jobs import Job

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished_graph():
    from qcore.analysis.graph_metrics import loaded_model_graph
    from qcore.zoo.models import load_model

    result = loaded_model_graph(load_model("fm_resnet"), calib_size=64)  # the page's default calibration size
    job = Job("graph", lambda j: result).start()
    job.wait()
    return job


def _page(job, lang: str = "en") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["graph_job"] = job
    at.session_state["lang_choice"] = lang
    return at.switch_page("views/graph.py").run()


def test_graph_page_draws_the_graph_a_node_and_the_side_by_side_view(finished_graph):
    at = _page(finished_graph)
    assert not at.exception and not at.error
    charts = at.get("plotly_chart")
    assert len(charts) >= 3  # the graph, the chosen node's histogram, the float vs quantized view
    assert at.selectbox(key="graph_metric").value == "sqnr"
    assert "top-1, only this layer quantized" not in at.selectbox(key="graph_metric").options  # no sweep: no such colour
    expand = at.multiselect(key="graph_expand")
    assert "layers.2" in expand.options  # fm_resnet's 61 nodes are over 60: its blocks are collapsed
    node_box = at.selectbox(key="graph_node")
    conv = next(i for i in node_box.options if "conv" in i)
    node_box.set_value(conv).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == len(charts) + 2  # the conv's weight distribution and channel ranges
    at.selectbox(key="graph_metric").set_value("clip_error").run()
    expand.set_value(["layers.2"]).run()
    assert not at.exception and not at.error


def test_graph_page_in_korean(finished_graph):
    at = _page(finished_graph, "ko")
    assert not at.exception and not at.error
    assert at.title[0].value == "모델 그래프"
    assert any(h.value == "노드 하나" for h in at.subheader)


def test_graph_page_before_a_run():
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/graph.py").run()
    assert not at.exception
    assert any("Build the graph" in i.value for i in at.info)


def test_a_graph_built_for_other_settings_is_not_shown_as_this_one(finished_graph):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["graph_job"] = finished_graph
    at.session_state["act_bits"] = 4  # the sidebar now asks for 4-bit activations; the graph has 8
    at.switch_page("views/graph.py").run()
    assert not at.exception
    assert any("settings changed" in i.value for i in at.info) and not at.get("plotly_chart")


def test_the_sensitivity_pages_sweep_colours_the_graph():
    """A finished sweep of the same model on the Sensitivity page makes "sensitivity" a colour of the graph."""
    from types import SimpleNamespace

    from qcore.analysis.graph_metrics import loaded_model_graph
    from qcore.analysis.reports import LayerSensitivity
    from qcore.zoo.models import load_model

    loaded = load_model("fm_resnet")
    rows = [LayerSensitivity("layers.3.conv1", "conv", 0.7, 0.9, 20.0, 0.1, 0.99)]
    source = "the Sensitivity page's sweep (100 images)"
    result = loaded_model_graph(loaded, calib_size=64, sensitivity=rows, sensitivity_from=source)
    graph_job = Job("graph", lambda j: result).start()
    report = SimpleNamespace(identity=SimpleNamespace(model_id=loaded.info["sha256"][:16]), layers=rows, eval_size=100)
    sweep_job = Job("sensitivity", lambda j: SimpleNamespace(report=report)).start()
    graph_job.wait()
    sweep_job.wait()
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["graph_job"] = graph_job
    at.session_state["sensitivity_job"] = sweep_job
    at.switch_page("views/graph.py").run()
    assert not at.exception and not at.error
    box = at.selectbox(key="graph_metric")
    assert "top-1, only this layer quantized" in box.options  # the options as shown
    box.set_value("sensitivity").run()
    assert not at.exception
    assert any(c.value == f"Sensitivity from {source}." for c in at.caption)


def test_a_choice_the_graph_cannot_offer_falls_back_to_the_default(finished_graph):
    """Sensitivity chosen while a sweep was there, a node of another model: the page draws, with the defaults."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["graph_job"] = finished_graph
    at.session_state["graph_metric"] = "sensitivity"
    at.session_state["graph_node"] = "features_3_conv_0_0"
    at.switch_page("views/graph.py").run()
    assert not at.exception and not at.error
    assert at.selectbox(key="graph_metric").value == "sqnr" and at.selectbox(key="graph_node").value == "quantizers_q0"
