"""The Diagnose page in a real browser: fm_mobilenetv2 at 4-bit per-tensor weights diagnosed, the top fix applied
and re-measured, then the same results in Korean through the sidebar's toggle, and the cause's Learn link opens
the Learn page scrolled to that topic's section. Screenshots go to logs/."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, expect_at_least, expect_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_diagnose_mobilenet_apply_the_fix_and_read_it_in_korean(app_url, page):
    page.goto(f"{app_url}/diagnose?lang=en")
    wait_idle(page)
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_test_id("stSelectbox").filter(has_text="Model").click()
    page.get_by_role("option", name=re.compile("fm_mobilenetv2")).click()
    wait_idle(page)
    sidebar.get_by_label("Calibration images", exact=True).fill("256")
    sidebar.get_by_label("Calibration images", exact=True).press("Enter")
    wait_idle(page)
    bits = sidebar.get_by_test_id("stSlider").filter(has_text="Weight bits").get_by_role("slider")
    bits.focus()
    page.keyboard.press("Home")  # 2 bits, then two steps up: 4
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_idle(page)
    sidebar.get_by_test_id("stRadio").filter(has_text="Weight granularity").get_by_text("per-tensor").click()
    wait_idle(page)
    page.get_by_test_id("stForm").get_by_label("Evaluation images", exact=True).fill("200")
    page.get_by_role("button", name="Run diagnosis").click()
    expect(page.get_by_role("heading", name="Causes, worst layer first")).to_be_visible(timeout=900_000)
    wait_idle(page)
    expect_no_exception(page)
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-en.png"), full_page=True)
    expect(page.get_by_test_id("stMetric").filter(has_text="Weights only")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("W4 per-tensor weights")).to_be_visible()
    page.get_by_role("button", name="Apply fix and re-measure").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="After")).to_be_visible(timeout=600_000)
    wait_idle(page)
    expect_no_exception(page)
    expect_at_least(page.locator(".js-plotly-plot"), 1)  # the top cause's per-channel weight ranges
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-en.png"), full_page=True)
    page.locator("h1").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-en-top.png"), full_page=True)

    sidebar.get_by_text("한국어", exact=True).click()
    expect(page.get_by_role("heading", name="원인 (가장 나쁜 레이어부터)")).to_be_visible(timeout=120_000)
    wait_idle(page)
    expect_no_exception(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="적용 후")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="가중치만 양자화")).to_be_visible(timeout=60_000)
    cause = page.get_by_role("combobox", name="원인")
    expect(cause).to_be_visible()
    assert "가중치 채널 범위 불균형" in cause.aria_snapshot()  # the chosen cause, in Korean after the toggle
    page.get_by_test_id("stMetric").filter(has_text="적용 후").scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-ko.png"), full_page=True)
    page.locator("h1").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-ko-top.png"), full_page=True)

    # the cause's Learn link opens the Learn page at that cause's section, not at its top
    page.get_by_role("link", name=re.compile("^배우기: ")).click()
    page.wait_for_url(re.compile(r"/learn\?.*topic="), timeout=60_000)
    topic = re.search(r"topic=([a-z_]+)", page.url).group(1)
    assert topic in ("mobilenet", "granularity"), page.url  # the section on per-tensor weights' channel spread
    expect(page.locator(f"#topic-{topic}")).to_be_in_viewport(timeout=180_000)
    expect_no_exception(page)
    page.screenshot(path=str(ROOT / "logs" / "e2e-diagnose-learn-link-ko.png"))

    # back on the Diagnose page, its form shows the evaluation images the run used, not the default again
    page.get_by_test_id("stSidebarNav").get_by_text("원인 진단", exact=True).click()
    form = page.get_by_test_id("stForm")
    expect(form.get_by_label("평가 이미지 수", exact=True)).to_have_value("200", timeout=120_000)
    expect_no_exception(page)
