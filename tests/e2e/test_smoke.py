import pytest

from tests.e2e.conftest import ROOT, wait_count, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_app_opens_on_the_model_page_with_accuracy(app_url, page):
    page.goto(app_url)
    page.wait_for_selector("text=FP32 top-1", timeout=180_000)
    wait_idle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    metric = page.locator("[data-testid='stMetric']", has_text="FP32 top-1")
    value = metric.locator("[data-testid='stMetricValue']").inner_text()
    assert value.endswith("%") and 85.0 < float(value.rstrip("%")) <= 100.0
    wait_count(page, "img", 12)  # the sample predictions
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / "e2e-model-page.png"), full_page=True)
