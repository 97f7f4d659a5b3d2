"""Quantization Explorer: the Streamlit entry point.

Thin by design: pages read widgets, call qcore, and draw. This file sets up the page, the
sidebar every page shares, and navigation over the scripts in views/. Deep links such as
/calibration run through this file for every visitor: the page scripts live in views/, not pages/, so
Streamlit's own pages-folder routing never switches on and there is nothing to switch off (a switch
done by the first session raced with simultaneous first visitors; tested in tests/e2e/test_load.py).
"""

import streamlit as st

st.set_page_config(page_title="Quantization Explorer", page_icon=":material/tune:", layout="wide")

import views._engine  # noqa: E402,F401  (the engine imported once, in one order: simultaneous first visitors)
import views._streamlit_patches  # noqa: E402,F401  (keeps uploads from being lost when a run starts)
import views._upload_trace  # noqa: E402,F401  (the upload handshake in the server log, when QX_UPLOAD_TRACE is set)
from views._jobs import scheduler  # noqa: E402
from views._errors import user_errors  # noqa: E402  (set_page_config must come first)
from views._language import init_language, t  # noqa: E402
from views._settings import sidebar  # noqa: E402

with user_errors():  # e.g. QX_EXECUTOR names a Ray cluster that cannot be reached: one message, no traceback
    scheduler()  # the server's one job queue, made once before any page runs (it marks jobs a killed server left)

init_language()
pages = {
    t("Explore"): [
        st.Page("views/model.py", title=t("Model"), icon=":material/neurology:", default=True),
        st.Page("views/calibration.py", title=t("Calibration"), icon=":material/bar_chart:"),
        st.Page("views/sensitivity.py", title=t("Sensitivity"), icon=":material/tune:"),
        st.Page("views/graph.py", title=t("Graph"), icon=":material/account_tree:"),
        st.Page("views/diagnose.py", title=t("Diagnose"), icon=":material/troubleshoot:"),
        st.Page("views/recover.py", title=t("Recover accuracy"), icon=":material/healing:"),
        st.Page("views/qat.py", title=t("QAT"), icon=":material/model_training:"),
        st.Page("views/workflow.py", title=t("Workflow"), icon=":material/route:"),
        st.Page("views/learn.py", title=t("Learn"), icon=":material/school:"),
    ],
    t("Ship"): [
        st.Page("views/deploy.py", title=t("Deploy INT8"), icon=":material/rocket_launch:"),
        st.Page("views/history.py", title=t("History"), icon=":material/history:"),
    ],
}
nav = st.navigation(pages)
sidebar()
nav.run()
