from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def _learn() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("views/learn.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    return at


def test_learn_page_computes_from_the_model():
    at = _learn()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["levels"] == "8" and metrics["integer range"] == "[0, 7]"  # 3-bit asymmetric default
    tables = at.dataframe
    sym = tables[0].value.set_index("scheme")
    assert sym.loc["asymmetric", "levels used"] > sym.loc["symmetric", "levels used"]  # a ReLU output
    gran = tables[1].value.set_index("granularity")
    assert gran.loc["per-channel", "SQNR (dB)"] >= gran.loc["per-tensor", "SQNR (dB)"]
    headers = [h.value for h in at.header]
    for topic in ("7. Dynamic vs static PTQ", "8. Four-bit formats: INT4, NF4, FP4", "10. FP16 overflow vs BF16",
                  "11. Why MobileNet suffers under per-tensor weights", "Questions answered by experiments"):
        assert topic in headers
    # fm_resnet: live numbers of the new topics, and honest "does not apply" marks
    formats = next(d.value for d in tables if "format" in d.value.columns and "worst layer" in d.value.columns)
    assert set(formats["format"]) == {"INT4 per-channel", "INT4 per-group", "NF4", "FP4 E2M1"}
    assert (formats["SQNR, all weights (dB)"] > 10).all()
    infos = " ".join(i.value for i in at.info)
    assert "no LayerNorm -> Linear pair" in infos and "no depthwise convolution" in infos
    at.number_input(key="learn_hi").set_value(0.5).run()  # max below min: a message, not a traceback
    at.number_input(key="learn_lo").set_value(1.0).run()
    assert not at.exception and "larger than range min" in at.error[0].value


@pytest.mark.slow
def test_learn_page_in_korean_with_the_new_sections():
    from tests.app.navigation import routed

    at = routed("views/learn.py", "ko")
    assert not at.exception and not at.error
    headers = [h.value for h in at.header]
    assert "실험으로 답하는 질문" in headers
    assert any("FP16" in h and "BF16" in h for h in headers)
    tables = at.dataframe
    assert any("형식" in d.value.columns for d in tables) and any("방식" in d.value.columns for d in tables)
    assert any("해당되지 않" in i.value for i in at.info)  # SmoothQuant: no LayerNorm -> Linear


@pytest.mark.slow
def test_learn_page_on_mobilenet_and_vit_shows_the_topics_that_apply():
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model"] = "fm_mobilenetv2"
    at.switch_page("views/learn.py").run()
    assert not at.exception
    assert any(m.label == "median spread, depthwise" and m.value != "–" for m in at.metric)
    at.session_state["model"] = "fm_vit"
    at.run()
    assert not at.exception
    assert any(b.label == "Run SmoothQuant and measure A8 accuracy" for b in at.button)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Every Learn job's result as the engine makes it, computed on a tiny model (the drawing code is what
    is tested here; the numbers' own tests are in tests/analysis)."""
    from qcore.analysis import learn_questions as lq
    from qcore.analysis import learn_topics as lt
    from qcore.runtime.dynamic_study import dynamic_vs_static
    from qcore.run.jobs import Job
    from qcore.train.qat import QATRecipe, run_qat
    from tests.helpers import tiny_fashion_model

    tiny = tiny_fashion_model()
    qat = run_qat(tiny, recipe=QATRecipe(steps=4, minutes=None, epochs=2, batch_size=16, latency_iters=3,
                                         int8_each_epoch=False, train_size=64),
                  calib_size=32, eval_size=64, final_eval_size=64, out_dir=tmp_path_factory.mktemp("qat"))
    results = {"dynamic": dynamic_vs_static(tiny, calib_size=32, eval_size=64, iters=3),
               "lowbit": lt.measure_topic("lowbit", tiny, calib_size=32, eval_size=64),
               "spread": lt.measure_topic("spread", tiny, calib_size=32, eval_size=64),
               "smoothquant": lt.measure_topic("smoothquant", "fm_vit", calib_size=32, eval_size=64),
               "ste": lq.ste_gradients(torch.randn(500), "w"), "qat": qat}
    jobs = {}
    for name, value in results.items():
        jobs[name] = Job(name, lambda job, v=value: v).start()
        jobs[name].wait()
    return jobs


def _with_jobs(model: str, jobs: dict, keys: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["model"] = model
    from qcore.zoo.models import load_model

    ident = f"{model}_{load_model(model).info.get('sha256', '')[:12]}"  # jobs are keyed by name and weights
    for key, job in keys.items():
        at.session_state[key.format(m=ident)] = jobs[job]
    at.switch_page("views/learn.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    return at


@pytest.mark.slow
def test_finished_learn_jobs_draw_their_results_and_verdicts(finished):
    at = _with_jobs("fm_vit", finished, {"learn_job_dynamic_{m}": "dynamic", "learn_job_lowbit_{m}": "lowbit",
                                         "learn_job_smoothquant_{m}": "smoothquant", "learn_q_ste_{m}": "ste",
                                         "learn_q_when_{m}": "qat", "learn_q_data_{m}": "qat"})
    columns = [list(d.value.columns) for d in at.dataframe]
    assert ["path", "top-1 %", "median latency (ms)", "speedup vs FP32"] in columns
    assert ["LayerNorm", "outliers before (max / median)", "outliers after (max / median)"] in columns
    assert ["through", "gradient 0", "gradient ≠ 0"] in columns
    assert ["epoch", "step", "top-1 %"] in columns
    assert any(m.label == "W8A8 + SmoothQuant" for m in at.metric)
    assert any(m.label == "QAT W8A8" for m in at.metric)  # the tiny run's default config
    marks = [e.value[0] for e in [*at.success, *at.warning, *at.info] if e.value[:1] in "✓✗–"]
    assert len(marks) >= 7
    at = _with_jobs("fm_mobilenetv2", finished, {"learn_job_spread_{m}": "spread"})
    assert {"FP32", "per-tensor", "per-channel"} <= {m.label for m in at.metric}
