"""History page: every stored calibration, sensitivity, deploy and QAT run; filter, compare,
delete, export. The runs live in a SQLite file (qcore.store.history), so they outlast the session."""

from __future__ import annotations

import sqlite3

import pandas as pd
import streamlit as st

from pages._ui import t
from qcore.store import history
from qcore.figures import comparable_metrics, runs_compare_figure

st.title(t("History"))
st.caption(f"Every finished run from the app or `python -m qcore`, stored in `{history.db_path()}`.")

c1, c2 = st.columns([2, 1])
kinds = c1.multiselect("Kinds", history.KINDS, default=list(history.KINDS))
model = c2.text_input("Model name contains", "")
try:
    runs = [r for r in history.list_runs(model=model.strip() or None) if r["kind"] in kinds]
except sqlite3.Error as exc:
    st.error(f"The history file cannot be read: {exc}")
    st.stop()
if not runs:
    st.info("No runs stored yet" + (" that match the filters." if model or len(kinds) < len(history.KINDS) else
            ". Runs on the Calibration, Sensitivity, QAT and Deploy pages are saved here when they finish."))
    st.stop()

rows = history.flat_rows(runs)
table = pd.DataFrame(rows)
event = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                     key="history_table")
selected = [rows[i]["id"] for i in event.selection.rows] if event and event.selection else []
st.caption(f"{len(runs)} run(s). Select rows to compare, export or delete them.")

chosen = history.get_runs(selected) if selected else []
if len(chosen) >= 2:
    st.subheader(t("Side by side"))
    flat = history.flat_rows(chosen)
    side = pd.DataFrame(flat).set_index("id").T
    side.columns = [f"#{c}" for c in side.columns]
    st.dataframe(side.map(lambda v: "" if v is None or v != v else str(v)), width="stretch")
    numeric, default = comparable_metrics(flat)
    metrics = st.multiselect("Metrics to chart", numeric, default=default)
    if metrics:
        st.plotly_chart(runs_compare_figure(flat, metrics), key="compare")
    with st.expander("Configs"):
        for run in chosen:
            st.markdown(f"**#{run['id']}** {run['kind']} {run['model']} (model id `{run['model_id']}`), data {run['data_id']}")
            st.json(run["config"], expanded=False)
elif len(chosen) == 1:
    run = chosen[0]
    st.subheader(f"Run #{run['id']}: {run['kind']} of {run['model']}")
    st.json({"config": run["config"], "metrics": run["metrics"], "timings": run["timings"], "data": run["data_id"]},
            expanded=False)

export = chosen or history.get_runs([r["id"] for r in runs])
d1, d2, d3 = st.columns(3)
what = "selected" if chosen else "listed"
d1.download_button(f"Export {what} as CSV", history.to_csv(export), file_name="qx_history.csv", mime="text/csv")
d2.download_button(f"Export {what} as JSON", history.to_json(export), file_name="qx_history.json",
                   mime="application/json")
if chosen:
    with d3.popover(f"Delete {len(chosen)} selected"):
        st.write("Deleted runs cannot be restored.")
        if st.button("Delete for good", type="primary"):
            n = history.delete_runs([r["id"] for r in chosen])
            st.session_state.pop("history_table", None)
            st.toast(f"Deleted {n} run(s).")
            st.rerun()
