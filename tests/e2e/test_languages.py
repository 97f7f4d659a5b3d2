"""Every page of app.py's navigation in a real browser, in Korean and in English: /<page>?lang=ko shows the
page's Korean title (Hangul rendered: fonts-noto-cjk) and not the English one, ?lang=en the English one; the
sidebar toggle switches a page's text in place. One Korean screenshot per page goes to logs/.

The page list is read from app.py's st.Page calls (tests/app/navigation.py), so a page added later is covered
without editing this file. Nothing long is started: pages are opened idle."""

import re

import pytest
from playwright.sync_api import expect

from qcore.i18n import translate
from tests.app.navigation import app_pages
from tests.e2e.conftest import ROOT, expect_no_exception, wait_idle

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAGES = app_pages()


def _hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def _title(page, url: str) -> str:
    """Open `url`, wait for the script run, and return the page's own title (its h1)."""
    page.goto(url)
    heading = page.locator("h1").first
    expect(heading).to_be_visible(timeout=180_000)
    wait_idle(page)
    expect_no_exception(page)
    return heading.inner_text().strip()


def test_the_navigation_lists_pages():
    assert len(PAGES) >= 8 and sum(p.default for p in PAGES) == 1


@pytest.mark.parametrize("nav", PAGES, ids=lambda p: p.url_path or "model")
def test_every_page_in_korean_and_english(app_url, page, nav):
    english = _title(page, f"{app_url}/{nav.url_path}?lang=en")
    assert english and not _hangul(english)
    korean = _title(page, f"{app_url}/{nav.url_path}?lang=ko")
    assert _hangul(korean) and korean == translate(english, "ko"), korean
    expect(page.get_by_role("heading", name=english, exact=True)).to_have_count(0)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_role("heading", name="모델과 데이터")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav").get_by_text(translate(nav.title, "ko"), exact=True)).to_be_visible()
    expect(sidebar.get_by_text("가중치 비트 수", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=60_000)  # widgets drawn for the screenshot
    (ROOT / "logs").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "logs" / f"e2e-ko-{nav.url_path or 'model'}.png"), full_page=True)


def test_the_sidebar_toggle_switches_a_page_in_place(app_url, page):
    """On a deep-linked page: Korean from the URL, English and back with the sidebar's toggle."""
    nav = next(p for p in PAGES if p.url_path == "calibration")
    korean = _title(page, f"{app_url}/{nav.url_path}?lang=ko")
    english = translate(nav.title, "en")
    sidebar = page.get_by_test_id("stSidebar")
    sidebar.get_by_text("English", exact=True).click()
    heading = page.locator("h1").first
    expect(heading).not_to_have_text(korean, timeout=60_000)
    wait_idle(page)
    assert not _hangul(heading.inner_text())
    expect(sidebar.get_by_role("heading", name="Model and data")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav").get_by_text(english, exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/{nav.url_path}\?lang=en$"))
    sidebar.get_by_text("한국어", exact=True).click()
    expect(heading).to_have_text(korean, timeout=60_000)
    expect(page).to_have_url(re.compile(rf"/{nav.url_path}\?lang=ko$"))
    expect_no_exception(page)
