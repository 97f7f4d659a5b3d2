"""The pages driven in a real browser: calibration and deploy runs, the learn page, a bad upload."""

import pytest

from tests.e2e.conftest import ROOT, wait_count, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def shot(page, name: str) -> None:
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-{name}.png"), full_page=True)


def test_calibration_run_shows_histogram_and_accuracy(app_url, page):
    page.goto(f"{app_url}/calibration")
    wait_idle(page)
    set_number(page, "Calibration images", 128)
    page.get_by_label("Evaluation images", exact=True).last.fill("200")
    page.get_by_role("button", name="Run calibration").click()
    page.wait_for_selector("text=End-to-end accuracy per method", timeout=300_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    wait_count(page, ".js-plotly-plot", 3)  # accuracy, overview, histogram
    assert page.get_by_text("percentile:99.99").count() > 0
    shot(page, "calibration")


def test_deploy_run_shows_latency_and_diagnosis(app_url, page):
    page.goto(f"{app_url}/deploy")
    wait_idle(page)
    set_number(page, "Evaluation images", 300)
    page.get_by_label("Timed calls per path", exact=True).fill("5")
    page.get_by_role("button", name="Build and measure").click()
    page.wait_for_selector("text=Diagnosis", timeout=400_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, "deploy")
    speed = page.locator("[data-testid='stMetric']", has_text="Speedup at batch 1")
    assert speed.locator("[data-testid='stMetricValue']").inner_text().endswith("x")
    wait_count(page, "[data-testid='stDownloadButton']", 3)


def test_learn_page(app_url, page):
    page.goto(f"{app_url}/learn")
    page.wait_for_selector("text=The affine mapping", timeout=120_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    wait_count(page, ".js-plotly-plot", 3)
    shot(page, "learn")


def test_bad_model_upload_is_a_message(app_url, page, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    page.goto(app_url)
    page.wait_for_selector("text=Your own model or images", timeout=180_000)
    wait_idle(page)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").first.set_input_files(str(junk))
    wait_idle(page)
    page.get_by_role("button", name="Load model").click()
    page.wait_for_selector("text=cannot be loaded safely", timeout=60_000)
    assert page.locator("[data-testid='stException']").count() == 0


def test_sensitivity_sweep_in_the_browser(app_url, page):
    page.goto(f"{app_url}/sensitivity")
    wait_idle(page)
    page.get_by_label("Evaluation images", exact=True).last.fill("100")
    page.get_by_role("button", name="Run sensitivity sweep").click()
    page.wait_for_selector("text=Your partial / mixed-precision config", timeout=400_000)
    wait_idle(page)
    shot(page, "sensitivity")
    assert page.locator("[data-testid='stException']").count() == 0
    wait_count(page, "[data-testid='stPlotlyChart']", 1)
    assert page.locator("[data-testid='stMetric']", has_text="All layers quantized").count() == 1


def test_qat_run_in_the_browser_draws_its_charts(app_url, page):
    page.goto(f"{app_url}/qat")
    wait_idle(page)
    set_number(page, "Calibration images", 128)
    set_number(page, "Evaluation images", 200)
    page.locator("[data-testid='stRadio']", has_text="Budget").get_by_text("steps", exact=True).click()
    page.get_by_label("Minutes or steps", exact=True).fill("4")
    page.get_by_label("Epochs (evaluation rounds)", exact=True).fill("1")
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_selector("text=QAT real INT8 top-1", timeout=400_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    wait_count(page, ".js-plotly-plot", 3)  # accuracy per epoch, loss, learning rate
    wait_count(page, "[data-testid='stDownloadButton']", 3)
    shot(page, "qat")


def test_history_lists_and_compares_runs(app_url, app_history, page):
    """Two stored runs (plus any the tests above made) are listed; ticking two rows compares them."""
    from qcore.store import history
    from tests.helpers import DEPLOY, STUDY

    history.record("deploy", DEPLOY, path=app_history)
    history.record("calibration", STUDY, path=app_history)
    page.goto(f"{app_url}/history")
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    wait_count(page, "[data-testid='stDataFrame']", 1)
    wait_count(page, "[data-testid='stDownloadButton']", 2)
    assert page.get_by_text("run(s). Select rows").count() == 1
    grid = page.locator("[data-testid='stDataFrame']").first.bounding_box()
    for row in (1, 2):  # tick the selection boxes of the first two rows (the grid is a canvas)
        page.mouse.click(grid["x"] + 16, grid["y"] + 35 * row + 17)
        wait_idle(page)
    page.wait_for_selector("text=Side by side", timeout=60_000)
    wait_count(page, ".js-plotly-plot", 1)
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, "history")


def test_closing_the_tab_stops_its_job(app_server, browser):
    """A long QAT run keeps the server busy; once its browser session is gone (grace set to 5 s for
    this server), the job is cancelled and the server goes idle."""
    import time

    from tests.e2e.conftest import cpu_seconds

    url, proc = app_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/qat")
    wait_idle(page)
    page.locator("[data-testid='stRadio']", has_text="Budget").get_by_text("steps", exact=True).click()
    page.get_by_label("Minutes or steps", exact=True).fill("5000")
    page.get_by_role("button", name="Start fine-tuning").click()
    page.wait_for_selector("text=Cancel", timeout=120_000)

    def busy(seconds: float = 3.0) -> float:
        start = cpu_seconds(proc.pid)
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - start) / seconds

    assert busy() > 0.5  # cores in use by the run
    context.close()
    time.sleep(12)  # 5 s grace, the reaper's 2 s checks, and the cancel reaching the next step
    assert busy() < 0.3
