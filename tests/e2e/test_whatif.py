"""The what-if editor in a real browser, in English and Korean: run calibration, choose the last layer, open the
editor, type a clip max, see the fixed range measured, Keep it and find it in the sidebar. Screenshots to logs/."""

import pytest
from playwright.sync_api import expect

from qcore.i18n import translate
from tests.e2e.conftest import ROOT, expect_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def shot(page, name: str) -> None:
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-{name}.png"), full_page=True)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_whatif_editor_edits_and_keeps_a_layer(app_url, page, lang):
    def tr(text):
        return translate(text, lang)

    page.goto(f"{app_url}/calibration?lang={lang}")
    wait_idle(page)
    calib = page.get_by_label(tr("Calibration images"), exact=True)
    calib.fill("128")
    calib.press("Enter")
    wait_idle(page)
    page.get_by_label(tr("Evaluation images"), exact=True).last.fill("200")
    page.get_by_role("button", name=tr("Run calibration")).click()
    expect(page.get_by_role("heading", name=tr("One layer"))).to_be_visible(timeout=400_000)
    wait_idle(page)
    layer_box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(tr("Layer"), exact=True))
    layer_box.click()
    page.keyboard.type("fc")
    page.keyboard.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name=tr("Open the what-if editor")).click()
    expect(page.get_by_text(tr("Layer output SQNR"))).to_be_visible(timeout=300_000)
    wait_idle(page)
    clip_max = page.get_by_label(tr("Clip max"), exact=True)
    clip_max.fill("1")
    clip_max.press("Enter")
    wait_idle(page)
    expect(page.get_by_text("(fixed)").first).to_be_visible(timeout=120_000)
    expect_no_exception(page)
    shot(page, f"whatif-{lang}")
    page.get_by_role("button", name=tr("Keep"), exact=True).click()
    wait_idle(page)
    expect(page.get_by_test_id("stSidebar").get_by_text("fc (act_clip=[", exact=False)).to_be_visible(timeout=120_000)
    expect_no_exception(page)
    shot(page, f"whatif-kept-{lang}")
