"""Quantization Explorer: the Streamlit entry point.

Thin by design: pages read widgets, call qcore, and draw. This file sets up the page, the
sidebar every page shares, and navigation over the scripts in pages/. Deep links such as
/calibration run through this file too: pages/_ui.py switches off Streamlit's folder routing for
pages/ before a first visitor's deep link could run a page bare (tested in tests/e2e).
"""

import streamlit as st

st.set_page_config(page_title="Quantization Explorer", page_icon=":material/tune:", layout="wide")

from pages._ui import init_language, sidebar, t  # noqa: E402  (set_page_config must come first)

init_language()
pages = {
    t("Explore"): [
        st.Page("pages/model.py", title=t("Model"), icon=":material/neurology:", default=True),
        st.Page("pages/calibration.py", title=t("Calibration"), icon=":material/bar_chart:"),
        st.Page("pages/sensitivity.py", title=t("Sensitivity"), icon=":material/tune:"),
        st.Page("pages/recover.py", title=t("Recover accuracy"), icon=":material/healing:"),
        st.Page("pages/qat.py", title=t("QAT"), icon=":material/model_training:"),
        st.Page("pages/workflow.py", title=t("Workflow"), icon=":material/route:"),
        st.Page("pages/learn.py", title=t("Learn"), icon=":material/school:"),
    ],
    t("Ship"): [
        st.Page("pages/deploy.py", title=t("Deploy INT8"), icon=":material/rocket_launch:"),
        st.Page("pages/history.py", title=t("History"), icon=":material/history:"),
    ],
}
nav = st.navigation(pages)
sidebar()
nav.run()
