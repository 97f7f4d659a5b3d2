"""A file dropped on st.file_uploader while script runs keep starting reaches the script (views/_streamlit_patches.py).

Streamlit 1.67 drops the server's answer to the uploader's request for upload URLs when a run starts before the
answer is sent; the browser then waits for it forever. An app that reruns without pause makes that likely: unpatched,
2 of the 8 drops were lost in each of two runs here (AVX2 class, 2 cores). The app below imports the fix as app.py
does."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ROOT, running_app

pytestmark = pytest.mark.e2e

DROPS = 8
RERUNNING_APP = f'''
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import views._streamlit_patches  # noqa: F401  (the fix under test)
import streamlit as st

f = st.file_uploader("file")
st.write("received:", f.name if f else "nothing")
runs = st.session_state.setdefault("runs", 0)
if f is None and runs < 3000:  # a new run every ~10 ms until the file arrives
    st.session_state["runs"] = runs + 1
    time.sleep(0.01)
    st.rerun()
'''


def test_every_file_dropped_while_runs_keep_starting_arrives(browser, tmp_path):
    script = tmp_path / "rerunning_app.py"
    script.write_text(RERUNNING_APP)
    upload = tmp_path / "weights.bin"
    upload.write_bytes(b"\0" * 4096)
    arrived = []
    with running_app(tmp_path / "history.sqlite", "e2e-upload-race.log", script=str(script)) as (url, _):
        for _ in range(DROPS):
            page = browser.new_page()
            page.goto(url)
            expect(page.get_by_text("received: nothing")).to_be_visible(timeout=60_000)
            page.wait_for_timeout(300)  # runs are starting back to back by now
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(upload))
            try:
                expect(page.get_by_text("received: weights.bin")).to_be_visible(timeout=20_000)
                arrived.append(True)
            except AssertionError:
                arrived.append(False)
            page.close()
    assert all(arrived), f"{arrived.count(False)} of {DROPS} dropped files never reached the script"
