"""History page: every stored calibration, sensitivity, deploy and QAT run; filter, compare,
delete, export. The runs live in a SQLite file (qcore.store.history), so they outlast the session."""

from __future__ import annotations

import sqlite3
import time

import pandas as pd
import streamlit as st

from views._language import t
from qcore.store import history
from qcore.figures import comparable_metrics, runs_compare_figure

st.title(t("History"))
st.caption(t("Every finished run from the app or `python -m qcore`, stored in `{path}`.").format(path=history.db_path()))


def kind_label(kind: str) -> str:
    """A run kind as the page shows it (the stored value stays the engine's name)."""
    return {"calibration": t("calibration"), "sensitivity": t("sensitivity"), "deploy": t("deploy"), "qat": t("qat"),
            "recovery": t("recovery"), "workflow": t("workflow"),
            "diagnosis": t("diagnosis")}.get(kind, kind)


def identity_names() -> dict[str, str]:
    """The identity columns of a flattened run in the session's language; metric names stay as stored
    (they are the keys the CLI, the CSV export and the comparison chart use)."""
    return {"id": t("id"), "kind": t("kind"), "time": t("time"), "model": t("model"), "data": t("data"),
            "eval_size": t("eval_size"), "seed": t("seed")}


def shown_columns(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(columns=identity_names())


def job_status_label(status: str) -> str:
    """A job state as the page shows it (the stored value stays the engine's name)."""
    from qcore.run.jobs import JobStatus

    labels = {JobStatus.QUEUED: t("queued"), JobStatus.RUNNING: t("running"), JobStatus.DONE: t("done"),
              JobStatus.FAILED: t("failed"), JobStatus.CANCELLED: t("cancelled"), JobStatus.INTERRUPTED: t("interrupted")}
    return labels.get(status, status)


def jobs_section() -> None:
    """The server's jobs, newest first: what is queued or running now, and what failed, was cancelled or was cut
    off by a server restart (marked "interrupted" here once its server process is gone)."""
    from qcore.run.job_log import JobLog

    log = JobLog()
    try:
        log.mark_interrupted()
        records = log.recent(200)
    except sqlite3.Error as exc:
        st.warning(t("The job log cannot be read: {reason}").format(reason=exc))
        return
    if not records:
        return
    from qcore.run.jobs import JobStatus

    shown = (JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.INTERRUPTED, JobStatus.CANCELLED, JobStatus.FAILED)
    counts = {s: sum(r.status == s for r in records) for s in shown}
    summary = ", ".join(f"{job_status_label(s)} {n}" for s, n in counts.items() if n)
    stamp = lambda x: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x)) if x else ""  # noqa: E731
    with st.expander(t("Jobs on this server ({n}): {summary}").format(n=len(records), summary=summary or t("all done")),
                     expanded=bool(counts[JobStatus.INTERRUPTED] or counts[JobStatus.RUNNING] or counts[JobStatus.QUEUED])):
        st.dataframe(pd.DataFrame([{
            t("job"): r.name, t("model"): r.model or "", t("status"): job_status_label(r.status),
            t("sessions"): r.sessions, t("submitted"): stamp(r.submitted),
            t("waited (s)"): round((r.started or r.finished or time.time()) - r.submitted, 1),
            t("ran (s)"): round((r.finished or time.time()) - r.started, 1) if r.started else None,
            t("reason"): r.error or ""} for r in records]), hide_index=True, width="stretch", key="jobs_table")
        st.caption(t("Finished runs are stored below whole; a job the server could not finish (it stopped or "
                     "restarted) is marked interrupted and stored nowhere else."))


jobs_section()
c1, c2 = st.columns([2, 1])
kinds = c1.multiselect(t("Kinds"), history.KINDS, default=list(history.KINDS), format_func=kind_label,
                       key="history_kinds")
model = c2.text_input(t("Model name contains"), "", key="history_model")
try:
    runs = [r for r in history.list_runs(model=model.strip() or None) if r["kind"] in kinds]
except sqlite3.Error as exc:
    st.error(t("The history file cannot be read: {reason}").format(reason=exc))
    st.stop()
if not runs:
    st.info(t("No runs stored yet that match the filters.") if model or len(kinds) < len(history.KINDS) else
            t("No runs stored yet. Runs on the Calibration, Sensitivity, QAT and Deploy pages are saved here when "
              "they finish."))
    st.stop()

rows = history.flat_rows(runs)
table = pd.DataFrame(rows)
event = st.dataframe(shown_columns(table), hide_index=True, width="stretch", on_select="rerun", selection_mode="multi-row",
                     key="history_table")
selected = [rows[i]["id"] for i in event.selection.rows] if event and event.selection else []
st.caption(t("{n} run(s). Select rows to compare, export or delete them.").format(n=len(runs)))

chosen = history.get_runs(selected) if selected else []
if len(chosen) >= 2:
    st.subheader(t("Side by side"))
    flat = history.flat_rows(chosen)
    side = pd.DataFrame(flat).set_index("id").T.rename(index=identity_names())
    side.columns = [f"#{c}" for c in side.columns]
    st.dataframe(side.map(lambda v: "" if v is None or v != v else str(v)), width="stretch")
    numeric, default = comparable_metrics(flat)
    metrics = st.multiselect(t("Metrics to chart"), numeric, default=default, key="history_metrics")
    if metrics:
        st.plotly_chart(runs_compare_figure(flat, metrics, title=t("Runs compared")), key="compare")
    with st.expander(t("Configs")):
        for run in chosen:
            st.markdown(t("**#{id}** {kind} {model} (model id `{model_id}`), data {data}").format(
                id=run['id'], kind=kind_label(run['kind']), model=run['model'], model_id=run['model_id'],
                data=run['data_id']))
            st.json(run["config"], expanded=False)
elif len(chosen) == 1:
    run = chosen[0]
    st.subheader(t("Run #{id}: {kind} of {model}").format(id=run['id'], kind=kind_label(run['kind']), model=run['model']))
    st.json({"config": run["config"], "metrics": run["metrics"], "timings": run["timings"], "data": run["data_id"],
             "identity": run["details"].get("identity", {})}, expanded=False)

export = chosen or history.get_runs([r["id"] for r in runs])
d1, d2, d3 = st.columns(3)
csv_label, json_label = ((t("Export selected as CSV"), t("Export selected as JSON")) if chosen else
                          (t("Export listed as CSV"), t("Export listed as JSON")))
d1.download_button(csv_label, history.to_csv(export), file_name="qx_history.csv", mime="text/csv")
d2.download_button(json_label, history.to_json(export), file_name="qx_history.json", mime="application/json")
if chosen:
    with d3.popover(t("Delete {n} selected").format(n=len(chosen))):
        st.write(t("Deleted runs cannot be restored."))
        if st.button(t("Delete for good"), type="primary", key="history_delete"):
            n = history.delete_runs([r["id"] for r in chosen])
            st.session_state.pop("history_table", None)
            st.toast(t("Deleted {n} run(s).").format(n=n))
            st.rerun()
