"""The pages driven in a real browser: deep links, calibration and deploy runs, the learn page, a bad upload."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, drop_files, expect_at_least, expect_no_exception, upload_and_load, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def shot(page, name: str) -> None:
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-{name}.png"), full_page=True)


def expect_app_shell(page) -> None:
    """app.py ran: the shared sidebar with its widgets, and the navigation app.py defines."""
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("heading", name="Model and data")).to_be_visible()
    expect(sidebar.get_by_test_id("stSelectbox").filter(has_text="Model")).to_be_visible()
    expect(sidebar.get_by_test_id("stSidebarNav").get_by_text("Deploy INT8")).to_be_visible()


@pytest.mark.parametrize("path, title", [("calibration", "Calibration explorer"),
                                         ("deploy", "Deploy: real INT8 on this CPU")])
def test_deep_link_from_a_first_visitor_opens_the_page_inside_the_app(fresh_app_url, page, path, title):
    """A bookmarked link to a page, the first request after the server started, still runs through
    app.py: the page, the shared sidebar and the navigation."""
    page.goto(f"{fresh_app_url}/{path}")
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=180_000)
    wait_idle(page)
    expect(page).to_have_url(re.compile(rf"/{path}$"))
    expect_app_shell(page)
    expect_no_exception(page)


def test_deep_link_opens_the_page_inside_the_app(app_url, page):
    """Once the app has been opened, a link straight to a page shows it with the shared sidebar."""
    page.goto(app_url)
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    page.goto(f"{app_url}/calibration")
    expect(page.get_by_role("heading", name="Calibration explorer")).to_be_visible(timeout=180_000)
    wait_idle(page)
    expect(page).to_have_url(re.compile(r"/calibration$"))
    expect_app_shell(page)
    expect_no_exception(page)


def test_calibration_run_shows_histogram_and_accuracy(app_url, page):
    page.goto(f"{app_url}/calibration")
    wait_idle(page)
    set_number(page, "Calibration images", 128)
    page.get_by_label("Evaluation images", exact=True).last.fill("200")
    page.get_by_role("button", name="Run calibration").click()
    expect(page.get_by_text("End-to-end accuracy per method")).to_be_visible(timeout=300_000)
    wait_idle(page)
    expect_no_exception(page)
    expect_at_least(page.locator(".js-plotly-plot"), 3)  # accuracy, overview, histogram
    expect(page.get_by_text("percentile:99.99").first).to_be_attached()
    shot(page, "calibration")


def test_deploy_run_shows_latency_and_diagnosis(app_url, page):
    page.goto(f"{app_url}/deploy")
    wait_idle(page)
    set_number(page, "Evaluation images", 300)
    page.get_by_label("Timed calls per path", exact=True).fill("5")
    page.get_by_role("button", name="Build and measure").click()
    expect(page.get_by_text("Diagnosis", exact=True)).to_be_visible(timeout=400_000)
    wait_idle(page)
    expect_no_exception(page)
    shot(page, "deploy")
    speed = page.get_by_test_id("stMetric").filter(has_text="Speedup at batch 1")
    expect(speed.get_by_test_id("stMetricValue")).to_have_text(re.compile(r"x$"))
    expect_at_least(page.get_by_test_id("stDownloadButton"), 3)


def test_learn_page(app_url, page):
    page.goto(f"{app_url}/learn")
    expect(page.get_by_text("The affine mapping")).to_be_visible(timeout=120_000)
    wait_idle(page)
    expect_no_exception(page)
    expect_at_least(page.locator(".js-plotly-plot"), 3)
    shot(page, "learn")


def test_bad_model_upload_is_a_message(app_url, page, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    page.goto(app_url)
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    wait_idle(page)
    upload_and_load(page, junk, page.get_by_text("cannot be loaded safely"), timeout_ms=60_000)
    expect_no_exception(page)


def test_a_load_pressed_while_the_file_uploads_loads_it_when_it_arrives(app_url, page, tmp_path):
    """Users press Load model as soon as the file's name shows, and it shows while the file still uploads. The press
    is remembered: the page says the file has not arrived, then loads it in the run its upload ends with, with no
    second press. The browser's upload is slowed (CDP, 200 kB/s for 4 MB) so that the press lands mid-upload."""
    junk = tmp_path / "slow.pt"
    junk.write_bytes(b"not a checkpoint" * 250_000)
    page.goto(app_url)
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    wait_idle(page)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 200_000})
    drop_files(page, [junk])
    expect(page.get_by_test_id("stFileChipIconSpinner")).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Load model").click()
    waiting = page.get_by_text("No file has reached the server yet")
    expect(waiting).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stFileChipIconSpinner")).to_have_count(1)  # said while the file still uploaded
    expect(page.get_by_text("cannot be loaded safely")).to_be_visible(timeout=120_000)
    expect(waiting).to_have_count(0)
    expect_no_exception(page)


def test_an_uploaded_torch_export_program_is_quantized_for_real(app_url, page, tmp_path):
    """The upload path of the done-when: a .pt2 of the trained MobileNet-style model, loaded with its input
    shape and preprocessing, shows its format and quantized layer count, then calibrates in the browser."""
    import torch

    from qcore.zoo.models import load_model

    net = load_model("fm_mobilenetv2").module
    program = torch.export.export(net, (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, tmp_path / "fm_mobile.pt2")
    page.goto(app_url)
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    wait_idle(page)
    data = page.get_by_test_id("stSidebar").get_by_label("Dataset", exact=True)
    data.fill("fashion-mnist")  # an own model's classes are its own: say which images it is scored on
    data.press("Enter")
    wait_idle(page)
    # no input shape typed: the export fixed 1x28x28, so it is read from the file
    upload_and_load(page, tmp_path / "fm_mobile.pt2", page.get_by_role("heading", name="user:fm_mobile.pt2"))
    wait_idle(page)
    expect(page.get_by_text("Format: pt2. Input 1x28x28")).to_be_visible()
    quantized = page.get_by_test_id("stMetric").filter(has_text="Quantized layers")
    expect(quantized).to_contain_text(str(sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in net.modules())))
    expect_no_exception(page)
    shot(page, "upload-pt2")
    page.get_by_test_id("stSidebarNav").get_by_text("Calibration").click()
    expect(page.get_by_role("heading", name="Calibration explorer")).to_be_visible(timeout=60_000)
    wait_idle(page)
    set_number(page, "Calibration images", 64)
    page.get_by_label("Evaluation images", exact=True).last.fill("200")
    page.get_by_role("button", name="Run calibration").click()
    expect(page.get_by_text("End-to-end accuracy per method")).to_be_visible(timeout=300_000)
    expect(page.get_by_text(re.compile(r"\d+ layers quantized"))).to_be_visible()
    expect_no_exception(page)


def test_language_from_the_url_and_the_sidebar_toggle(app_url, page):
    """?lang=ko opens the app in Korean (Hangul rendered with fonts-noto-cjk); the toggle switches back."""
    page.goto(f"{app_url}/?lang=ko")
    expect(page.get_by_role("heading", name="양자화 탐색기 (Quantization Explorer)")).to_be_visible(timeout=180_000)
    wait_idle(page)
    expect(page.get_by_test_id("stSidebarNav").get_by_text("민감도 분석")).to_be_visible()
    shot(page, "korean")
    page.get_by_test_id("stSidebar").get_by_text("English", exact=True).click()
    expect(page.get_by_role("heading", name="Quantization Explorer", exact=True)).to_be_visible(timeout=60_000)
    expect(page).to_have_url(re.compile(r"lang=en"))
    expect_no_exception(page)


def test_classify_uploaded_images(app_url, page, tmp_path):
    """A picture gets its top classes under it; a file that is no image gets a message, not a traceback."""
    from PIL import Image

    picture, junk = tmp_path / "shirt.png", tmp_path / "junk.png"
    Image.new("L", (56, 56), 180).save(picture)
    junk.write_bytes(b"not an image")
    page.goto(app_url)
    expect(page.get_by_text("Your own model or images")).to_be_visible(timeout=180_000)
    wait_idle(page)
    page.get_by_role("tab", name="Classify images").click()
    drop_files(page, [picture, junk], uploader="Image files")
    wait_idle(page)
    expect(page.get_by_text("junk.png: not a readable image")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r": \d+\.\d%$"))).to_have_count(5)
    expect_no_exception(page)


def test_sensitivity_sweep_in_the_browser(app_url, page):
    page.goto(f"{app_url}/sensitivity")
    wait_idle(page)
    page.get_by_label("Evaluation images", exact=True).last.fill("100")
    page.get_by_role("button", name="Run sensitivity sweep").click()
    expect(page.get_by_text("Your partial / mixed-precision config")).to_be_visible(timeout=400_000)
    wait_idle(page)
    shot(page, "sensitivity")
    expect_no_exception(page)
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 1)
    expect(page.get_by_test_id("stMetric").filter(has_text="All layers quantized")).to_have_count(1)


def test_qat_run_in_the_browser_draws_its_charts(app_url, page):
    page.goto(f"{app_url}/qat")
    wait_idle(page)
    set_number(page, "Calibration images", 128)
    set_number(page, "Evaluation images", 200)
    page.get_by_test_id("stRadio").filter(has_text="Budget").get_by_text("training steps", exact=True).click()
    page.get_by_label("Minutes or steps", exact=True).fill("4")
    page.get_by_label("Epochs (evaluation rounds)", exact=True).fill("1")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.get_by_text("QAT real INT8 top-1")).to_be_visible(timeout=400_000)
    wait_idle(page)
    expect_no_exception(page)
    expect_at_least(page.locator(".js-plotly-plot"), 3)  # accuracy per epoch, loss, learning rate
    expect_at_least(page.get_by_test_id("stDownloadButton"), 3)
    shot(page, "qat")


def test_history_lists_and_compares_runs(app_url, app_history, page):
    """Two stored runs (plus any the tests above made) are listed; ticking two rows compares them."""
    from qcore.store import history
    from tests.helpers import DEPLOY, STUDY

    history.record(DEPLOY, path=app_history)
    history.record(STUDY, path=app_history)
    page.goto(f"{app_url}/history")
    wait_idle(page)
    expect_no_exception(page)
    expect_at_least(page.get_by_test_id("stDataFrame"), 1)
    expect_at_least(page.get_by_test_id("stDownloadButton"), 2)
    expect(page.get_by_text("run(s). Select rows")).to_have_count(1)
    runs_grid = page.get_by_test_id("stDataFrame").last  # the runs (the job log's table comes first)
    for row in (1, 2):  # tick the selection boxes of the first two rows (the grid is a canvas)
        # In the full suite the job log above it can be open and long (jobs left running or interrupted by
        # the tests before), pushing the grid below the fold, where a click at its coordinates hits nothing:
        # scroll it into view and measure it again before each click.
        runs_grid.scroll_into_view_if_needed()
        grid = runs_grid.bounding_box()
        page.mouse.click(grid["x"] + 16, grid["y"] + 35 * row + 17)
        wait_idle(page)
    expect(page.get_by_text("Side by side")).to_be_visible(timeout=60_000)
    expect_at_least(page.locator(".js-plotly-plot"), 1)
    expect_no_exception(page)
    shot(page, "history")


def test_a_closed_tab_s_job_finishes_into_the_history(app_server, app_history, browser):
    """By default a job outlives its browser tab: a calibration started and left at once is in the History
    (and the job log says done) after the grace period (5 s for this server) has passed."""
    import time

    from qcore.store import history
    from qcore.run.job_log import JobLog

    url, _ = app_server
    before = len(history.list_runs(kind="calibration", path=app_history))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/calibration")
    wait_idle(page)
    eval_box = page.get_by_label("Evaluation images", exact=True).last
    eval_box.fill("123")
    eval_box.press("Tab")
    page.get_by_role("button", name="Run calibration").click()
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_visible(timeout=120_000)
    context.close()
    deadline = time.monotonic() + 300
    while len(history.list_runs(kind="calibration", path=app_history)) == before:
        assert time.monotonic() < deadline, "the closed tab's job did not finish into the history"
        time.sleep(1)
    while JobLog(app_history).recent(1)[0].status != "done":  # the log's end is written just after the run
        assert time.monotonic() < deadline, JobLog(app_history).recent(1)
        time.sleep(0.5)


def test_closing_the_tab_stops_its_job_when_asked(app_server, browser):
    """A long QAT run keeps the server busy; its user switched on "Cancel it if I close the page", so once the
    browser session is gone (grace set to 5 s for this server), the job is cancelled and the server goes idle."""
    import time

    from tests.e2e.conftest import cpu_seconds

    url, proc = app_server
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/qat")
    wait_idle(page)
    page.get_by_test_id("stRadio").filter(has_text="Budget").get_by_text("training steps", exact=True).click()
    page.get_by_label("Minutes or steps", exact=True).fill("5000")
    page.get_by_role("button", name="Start fine-tuning").click()
    expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_visible(timeout=120_000)
    page.get_by_text("Cancel it if I close the page").click()
    wait_idle(page)

    def busy(seconds: float = 3.0) -> float:
        start = cpu_seconds(proc.pid)
        time.sleep(seconds)
        return (cpu_seconds(proc.pid) - start) / seconds

    assert busy() > 0.5  # cores in use by the run
    context.close()
    time.sleep(8)  # 5 s grace and the reaper's 2 s checks
    deadline = time.monotonic() + 60  # the cancel lands at the job's next progress report (a QAT baseline
    while busy() >= 0.3:  # exports and times INT8 models first: up to tens of seconds on a loaded machine)
        assert time.monotonic() < deadline, "the job kept running after its session closed"
