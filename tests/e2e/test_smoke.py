import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, expect_at_least, expect_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_app_opens_on_the_model_page_with_accuracy(app_url, page):
    page.goto(app_url)
    metric = page.get_by_test_id("stMetric").filter(has_text="FP32 top-1")
    expect(metric).to_be_visible(timeout=180_000)
    wait_idle(page)
    expect_no_exception(page)
    value = metric.get_by_test_id("stMetricValue")
    expect(value).to_have_text(re.compile(r"^\d+(\.\d+)?%$"))
    assert 85.0 < float(value.inner_text().rstrip("%")) <= 100.0
    expect_at_least(page.locator("img"), 6)  # the sample predictions (top-5 under each)
    expect(page.get_by_text("Format: builtin")).to_be_visible()
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / "e2e-model-page.png"), full_page=True)
