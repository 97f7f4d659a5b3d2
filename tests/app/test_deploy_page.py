"""AppTest of the deploy page with a finished job (a real deploy of a tiny model) in session state."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from qcore.quant.isa import cpu_isa
from qcore.run.jobs import Job
from tests.helpers import tiny_fashion_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory):
    from qcore.runtime.deploy import deploy

    out = tmp_path_factory.mktemp("deploy")
    report = deploy(tiny_fashion_model(), out_dir=out, calib_size=20, eval_size=50, iters=5, warmup=1,
                    batch_sizes=(1, 8), threads=1)
    job = Job("deploy", lambda j: report).start()
    job.wait()
    return job


@pytest.mark.slow
def test_deploy_page_shows_results_of_a_finished_job(finished_job):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["deploy_job"] = finished_job
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "Agreement with simulation" in labels and "Speedup at batch 1" in labels
    assert len(at.dataframe) == 1
    assert any("Diagnosis" in h.value for h in at.subheader)
    scheme = next(m.value for m in at.markdown if "INT8 scheme on this CPU" in m.value)
    assert ("7 bits" in scheme) != cpu_isa().vnni  # the weight range chosen for the CPU at hand, said on the page


@pytest.mark.parametrize("choice, said", [("auto", None), ("reduced", "weights use 7 bits"), ("full", "full 8 bits")])
def test_the_weight_range_choice_is_shown_for_this_cpu_and_overridable(choice, said):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["weight_range"] = choice
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    note = next(i.value for i in at.info if "This CPU" in i.value)
    assert ("has no VNNI" in note) == (not cpu_isa().vnni) and cpu_isa().cpu_class in note
    assert said is None or said in note
    if choice == "auto":
        assert ("7 bits" in note) == (not cpu_isa().vnni)


def test_deploy_page_without_a_job_invites_a_run():
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    assert any("Build and measure" in i.value for i in at.info)


def test_failed_job_shows_its_message():
    at = AppTest.from_file(APP, default_timeout=60)

    def boom(job):
        raise ValueError("the config file names layer 'nope' which the model does not have")

    job = Job("deploy", boom, (ValueError,)).start()
    job.wait()
    at.session_state["deploy_job"] = job
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    assert at.error and "nope" in at.error[0].value


@pytest.mark.slow
def test_deploy_results_in_korean(finished_job):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["deploy_job"] = finished_job
    at.session_state["lang_choice"] = "ko"  # the page may run without app.py here (see navigation.routed)
    at.switch_page("views/deploy.py").run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert "시뮬레이션과의 일치율" in labels and "배치 1 속도 향상" in labels
    assert "경로" in at.dataframe[0].value.columns
    assert any("이 CPU" in m.value for m in at.markdown)
