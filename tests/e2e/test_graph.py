"""The Graph page in a real browser: build fm_resnet's graph in English, click a collapsed block to open it, then the
same graph (shared, not rebuilt) in Korean. Screenshots go to logs/."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, expect_at_least, expect_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _shot(page, name: str) -> None:
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-graph-{name}.png"), full_page=True)


def _click_node(page, label: str) -> None:
    """Click the marker left of the node's label in the graph (the first chart)."""
    text = page.locator(".js-plotly-plot").first.locator("g.textpoint text").filter(
        has_text=re.compile(rf"^{re.escape(label)}$")).first
    box = text.bounding_box()
    page.mouse.click(box["x"] - 8, box["y"] + box["height"] / 2)


def test_graph_page_in_english_and_korean(app_url, page):
    page.goto(f"{app_url}/graph?lang=en")
    expect(page.get_by_role("heading", name="Model graph")).to_be_visible(timeout=180_000)
    wait_idle(page)
    page.get_by_role("button", name="Build the graph").click()
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 3, timeout_ms=240_000)  # graph, histogram, side by side
    wait_idle(page)
    expect_no_exception(page)
    expand = page.get_by_test_id("stMultiSelect")
    expect(expand.get_by_text("layers.2", exact=True)).to_have_count(0)
    # a click on the block's hexagon opens it (plotly's selection event reruns the page)
    _click_node(page, "layers.2")
    expect(expand.get_by_text("layers.2", exact=True)).to_have_count(1, timeout=60_000)
    wait_idle(page)
    # a click on a conv inside it shows that layer: its activation histogram and its weights
    _click_node(page, "layers.2.conv1")
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 5)  # + weight distribution and per-channel ranges
    wait_idle(page)
    expect(page.get_by_test_id("stMarkdown").get_by_text("layers.2.conv1", exact=True)).to_be_visible()
    expect_no_exception(page)
    _shot(page, "en")

    page.goto(f"{app_url}/graph?lang=ko")
    expect(page.get_by_role("heading", name="모델 그래프")).to_be_visible(timeout=180_000)
    expect_at_least(page.get_by_test_id("stPlotlyChart"), 3, timeout_ms=120_000)  # shared: drawn without a rebuild
    wait_idle(page)
    expect(page.get_by_role("heading", name="노드 하나")).to_be_visible()
    expect_no_exception(page)
    _shot(page, "ko")
