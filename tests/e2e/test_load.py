"""A classroom at once: many real Chromium sessions against one server.

(a) a fresh server, 8 first visitors open 8 different deep links at the same moment: every one gets the app
(sidebar, navigation, its page), none an exception; (b) a warm server, 6 sessions press Run calibration at
once: all finish with identical tables, each within (jobs ahead + 1) x the single-session time x 1.5 (timed to
when the server has sent the result to the browser, seen by a relay in between: `wire_clock`), and the job log shows one computation shared by the six; (c) four sessions with different requests on two slots: the third one says it is queued and where, one running session cancels, the others finish.

The sessions are browser contexts of one Chromium driven concurrently with Playwright's asyncio API (the
sync API is one thread's); the server is `streamlit run app.py` as users start it. The browsers run at the
lowest CPU priority (`students_chromium.sh`, SCHED_IDLE): in a classroom they run on the students' machines, and
here they would otherwise take the server's two cores from the jobs they are waiting for.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, running_app
from tests.e2e.wire_clock import WireClock

STUDENTS_CHROMIUM = ROOT / "tests" / "e2e" / "students_chromium.sh"

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEEP_LINKS = {
    "calibration": "Calibration explorer", "deploy": "Deploy: real INT8 on this CPU", "history": "History",
    "learn": "Learn: how quantization works", "qat": "QAT: quantization-aware fine-tuning",
    "recover": "Recover accuracy", "sensitivity": "Sensitivity and partial quantization",
    "workflow": "Quantization workflow",
}
EVAL_IMAGES = 300
RESULT_MARK = b"A8 top-1"  # a column of the accuracy table, sent once the result is drawn on the server


def _run(coro):
    """Run the sessions' coroutine on an event loop of its own thread (the other e2e tests' sync Playwright keeps
    a loop running in this one), at the lowest CPU priority: that thread's niceness passes to the Playwright
    driver it starts and to Chromium, the students' side, which in a classroom runs on the students' machines.
    (On Linux `os.nice` sets the calling thread's priority; the server, started from this thread, keeps its own.)"""
    import os
    from concurrent.futures import ThreadPoolExecutor

    def students_side():
        os.nice(19)
        return asyncio.run(coro)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(students_side).result()


async def _browser(pw):
    import os

    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return await pw.chromium.launch(executable_path=str(STUDENTS_CHROMIUM), headless=True, args=CHROMIUM_ARGS)


async def _new_page(browser):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    return await context.new_page()


async def _idle(page, timeout_ms: int = 300_000):
    from playwright.async_api import expect

    await expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning",
                                                                timeout=timeout_ms)


async def _open_deep_link(browser, url: str, path: str, title: str) -> str:
    from playwright.async_api import expect

    page = await _new_page(browser)
    await page.goto(f"{url}/{path}")
    await expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=300_000)
    await _idle(page)
    await expect(page).to_have_url(re.compile(rf"/{path}$"))
    sidebar = page.get_by_test_id("stSidebar")
    await expect(sidebar.get_by_role("heading", name="Model and data")).to_be_visible()
    await expect(sidebar.get_by_test_id("stSidebarNav").get_by_text("Deploy INT8")).to_be_visible()
    await expect(page.get_by_test_id("stException")).to_have_count(0)
    await expect(page.get_by_text("This app has encountered an error")).to_have_count(0)
    await page.screenshot(path=str(ROOT / "logs" / f"e2e-load-{path}.png"))
    return path


def test_eight_first_visitors_open_eight_deep_links_at_once(tmp_path):
    """The race of a fresh server: all eight requests arrive before any session has run app.py."""
    from playwright.async_api import async_playwright

    (ROOT / "logs").mkdir(exist_ok=True)

    async def visit_all(url):
        async with async_playwright() as pw:
            browser = await _browser(pw)
            done = await asyncio.gather(*(_open_deep_link(browser, url, p, title) for p, title in DEEP_LINKS.items()))
            await browser.close()
            return done

    with running_app(tmp_path / "history.sqlite", "e2e-streamlit-load-fresh.log") as (url, _):
        assert sorted(_run(visit_all(url))) == sorted(DEEP_LINKS)


def _when_result_arrives(page) -> dict:
    """Note when Chromium reports the first websocket frame that carries the accuracy table (its column "A8 top-1"):
    printed, not bounded. Chromium reports a frame once the page has drawn what came before it, so with six idle
    browsers on two cores this also counts their drawing, which in a classroom runs on each student's own machine;
    the bound uses the relay's time (`WireClock`), when the server had sent the frame."""
    arrived = {}

    def on_frame(payload):
        if "at" not in arrived and RESULT_MARK in (payload if isinstance(payload, bytes) else payload.encode()):
            arrived["at"] = time.monotonic()

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return arrived


async def _calibrate(browser, clock: WireClock, eval_images: int = EVAL_IMAGES, cancel: bool = False) -> dict:
    """One session, through its own relay `clock`: open the Calibration page, type the evaluation images into its
    form (the sidebar keeps its defaults: 512 calibration images, seed 0) and submit it; returns what it saw:
    seconds until the server had sent the result, until Chromium reported it, and until the browser had drawn its
    table. Sessions that should not share a computation ask for different numbers of evaluation images."""
    from playwright.async_api import expect

    page = await _new_page(browser)
    arrived = _when_result_arrives(page)
    await page.goto(f"{clock.url}/calibration")
    await expect(page.get_by_role("heading", name="Calibration explorer")).to_be_visible(timeout=300_000)
    await _idle(page)
    eval_box = page.get_by_label("Evaluation images", exact=True).last
    await eval_box.fill(str(eval_images))
    clock.arm()
    start = time.monotonic()
    # Enter commits the typed value and submits the form in one step (Streamlit's "Press Enter to submit form"):
    # Tab then a click on Run lost the typed value in one of six loaded sessions, which then ran another request.
    await eval_box.press("Enter")
    seen = {"page": page, "queued_text": None}
    if cancel:
        await expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_visible(timeout=60_000)
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await expect(page.get_by_text("Cancelled.")).to_be_visible(timeout=60_000)
        return {**seen, "cancelled": True}
    queued = page.get_by_text(re.compile(r"Queued: position \d+"))
    while "at" not in arrived:  # the frame is seen by the browser process: no page work while the job runs
        if seen["queued_text"] is None and await queued.count():
            seen["queued_text"] = await queued.first.inner_text()
        await asyncio.sleep(2.0)  # light on the machine: six browsers already share its two cores with the server
        assert time.monotonic() - start < 900, "calibration did not finish within 15 minutes"
    assert clock.seen_at is not None, "Chromium reported the result before the relay passed it on"
    seen["seconds"], seen["browser_s"] = clock.seen_at - start, arrived["at"] - start
    table = page.get_by_test_id("stTable")
    await expect(table).to_have_count(1, timeout=300_000)
    seen["drawn_s"] = time.monotonic() - start
    await _idle(page)
    await expect(page.get_by_test_id("stException")).to_have_count(0)
    await expect(page.get_by_text(f"accuracy on {eval_images} test images")).to_be_visible()
    seen["table"] = await table.first.inner_text()
    return seen


def _calibrate_at_once(url: str, runs: list[dict]) -> list[dict]:
    from playwright.async_api import async_playwright
    from urllib.parse import urlsplit

    server = urlsplit(url)
    # made here, in the test's own thread, so the relays run at normal priority (not the students' niced thread)
    clocks = [WireClock((server.hostname, server.port), RESULT_MARK) for _ in runs]

    async def go():
        async with async_playwright() as pw:
            browser = await _browser(pw)
            out = await asyncio.gather(*(_calibrate(browser, clock, **run) for clock, run in zip(clocks, runs)))
            await browser.close()
            return out

    try:
        return _run(go())
    finally:
        for clock in clocks:
            clock.close()


def _busy_processes(seconds: float = 3.0) -> list[tuple[float, str]]:
    """Processes that used more than a tenth of a core over `seconds` (percent of one core, command line)."""
    import os

    def ticks() -> dict[int, tuple[int, str]]:
        out = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{pid}/stat").read()
                fields = stat[stat.rindex(")") + 2:].split()
                cmd = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:80]
                out[int(pid)] = (int(fields[11]) + int(fields[12]), cmd)
            except (OSError, ValueError):
                continue
        return out

    first = ticks()
    time.sleep(seconds)
    hz = os.sysconf("SC_CLK_TCK")
    return sorted(((100 * (n - first[pid][0]) / hz / seconds, cmd) for pid, (n, cmd) in ticks().items()
                   if pid in first and (n - first[pid][0]) / hz / seconds > 0.1), reverse=True)


def _wait_for_a_quiet_machine(limit_s: float = 120.0) -> None:
    """Timings of the server need its two cores: wait (up to `limit_s`) until nothing else uses them, and print
    what did (an earlier test's leftover would otherwise show up as a slow classroom)."""
    deadline = time.monotonic() + limit_s
    while (busy := _busy_processes()) and time.monotonic() < deadline:
        print("waiting for a quiet machine:", "; ".join(f"{pct:.0f}% {cmd}" for pct, cmd in busy[:4]))


class _OtherLoad:
    """While the block runs, what other processes used of the cores (not the server, browsers or driver; this
    test process is listed, as jobs left running in it by earlier tests would show there):
    a slow classroom measured while something else ran says so in the failure."""

    OURS = ("chromium", "playwright", "streamlit run app.py")

    def __enter__(self):
        import threading

        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            for pct, cmd in _busy_processes():
                if not any(mark in cmd for mark in self.OURS):
                    self.seen[cmd] = max(pct, self.seen.get(cmd, 0.0))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def __str__(self):
        return "; ".join(f"{pct:.0f}% {cmd}" for cmd, pct in sorted(self.seen.items(), key=lambda kv: -kv[1])) or "none"


@pytest.fixture(scope="module")
def load_server(tmp_path_factory):
    history = tmp_path_factory.mktemp("e2e-load") / "history.sqlite"
    with running_app(history, "e2e-streamlit-load.log") as (url, _):
        yield url, history


def _six_against_one(url: str, alone_images: int):
    """Six sessions sharing one job, bracketed by one session alone before and after (one alone varied 14-24 s
    between runs on a 2-core machine; bracketing the six makes the bound a ratio measured in one stretch, so whatever
    else loads the machine then weighs on both sides): (mean single seconds, the six runs, the other load seen).
    A session has finished when its result reaches its browser; the seconds until six browsers on these two cores
    had drawn it are printed, not bounded (in a classroom each browser draws on its own machine)."""
    _wait_for_a_quiet_machine()
    before = _calibrate_at_once(url, [{"eval_images": alone_images}])[0]
    with _OtherLoad() as others:
        six = _calibrate_at_once(url, [{"eval_images": alone_images + 1}] * 6)
    after = _calibrate_at_once(url, [{"eval_images": alone_images + 2}])[0]
    alone = [before, after]
    single = sum(run["seconds"] for run in alone) / len(alone)
    def timings(run):
        return f"{run['seconds']:.1f} s (Chromium {run['browser_s']:.1f} s, drawn {run['drawn_s']:.1f} s)"

    print(f"single session {single:.1f} s (" + ", ".join(map(timings, alone))
          + "); six at once: " + ", ".join(map(timings, six))
          + f"; other processes during the six: {others}")
    return single, six, others


def test_six_sessions_calibrate_at_once_on_a_warm_server(load_server):
    from qcore.run.job_log import JobLog

    url, history = load_server
    _calibrate_at_once(url, [{"eval_images": EVAL_IMAGES + 7}])  # warms the server (data, model, code paths)
    single, six, others = _six_against_one(url, EVAL_IMAGES + 8)
    brackets = 1
    if any(run["seconds"] > (0 + 1) * single * 1.5 for run in six) and others.seen:
        # something outside the app took the cores during the six (CI measured 1.53x with an unnamed process at 34%
        # of a core): measure the bracket once more, with new requests, and judge that one
        print(f"over the bound with other load ({others}): measuring again")
        single, six, others = _six_against_one(url, EVAL_IMAGES + 20)
        brackets = 2
    tables = {run["table"] for run in six}
    assert len(tables) == 1 and "percentile:99.99" in tables.pop()
    for run in six:
        assert run["seconds"] <= (0 + 1) * single * 1.5, (run["seconds"], single, f"other load: {others}")
    shared = [r for r in JobLog(history).recent() if r.name == "calibration" and r.status == "done"]
    # the six shared one job: the warm-up, then two alone and one job of six per bracket
    assert sorted(r.sessions for r in shared) == [1] * (1 + 2 * brackets) + [6] * brackets, shared


def test_a_session_cancels_while_others_run_and_a_queued_one_says_where_it_stands(load_server):
    from qcore.run.scheduler import Limits

    url, _ = load_server
    first, *others = _calibrate_at_once(url, [{"eval_images": EVAL_IMAGES + i, "cancel": i == 1} for i in (1, 2, 3, 4)])
    assert first["cancelled"]
    assert all(run["table"] for run in others)
    queued = [run["queued_text"] for run in others if run["queued_text"]]
    if Limits.for_machine().slots < 3:  # four distinct jobs on fewer slots: somebody waited, and was told where
        assert queued
    for text in queued:
        position, ahead = map(int, re.search(r"Queued: position (\d+), (\d+) job\(s\) ahead", text).groups())
        assert 1 <= position <= ahead, text
