"""Background jobs on the pages: one scheduler per server, each session's tickets, and their live state.

Every page's long run goes through `run_job`: the server's one `Scheduler` (qcore.run.scheduler)
queues it with the other sessions' jobs, shares it with an identical request, and the page shows
where it stands (queued with its place, running with progress and ETA, done, failed, cancelled)
through `job_result`, polled by a fragment. A job outlives its browser session and finishes into
the history, unless the user chose to cancel it when the page closes.
"""

from __future__ import annotations

import os

import streamlit as st

from qcore.run.jobs import OPEN_STATES, JobStatus

from views._errors import USER_ERRORS
from views._language import engine_text, t
from qcore.run.scheduler import torch_threads

# Every poll is a script run on the server for every waiting session and a repaint in its browser. Alone, a
# session polls every 2 s; in a classroom the interval grows with the waiting sessions per core, up to 5 s (six
# sessions polling every 2 s on 2 cores slowed the job they shared from 24 to 30 s). An end due before the next
# poll is picked up as it happens (`_wait_for_a_near_end`), so a longer interval does not delay the result.
POLL_S = float(os.environ.get("QX_POLL_S", "2"))
MAX_POLL_S = max(POLL_S, 5.0)


@st.cache_resource(show_spinner=False)
def scheduler():
    """The server's one queue (created by the first session that needs it; Streamlit runs this once even when
    many sessions ask at the same moment). Its runner is this process, or Ray with `QX_EXECUTOR=ray` / a
    cluster address. Work a page does itself takes what the running jobs leave (page_threads, below)."""
    from qcore.run.job_log import JobLog
    from qcore.run.ray_jobs import make_runner
    from qcore.run.scheduler import Limits, Scheduler

    runner = make_runner(os.environ.get("QX_EXECUTOR") or "local")
    return Scheduler(Limits.for_machine(cores=runner.cores()), runner, JobLog())


@st.cache_resource(show_spinner=False)
def _reaper():
    """One per process: cancels the jobs of closed browser sessions whose user asked for that (after a grace period)."""
    from streamlit.runtime import Runtime

    from qcore.run.jobs import JobReaper

    def alive(session_id: str) -> bool:
        return not Runtime.exists() or Runtime.instance().is_active_session(session_id)

    return JobReaper(alive, grace=float(os.environ.get("QX_JOB_GRACE_S", "30")))


def _session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def _remember(report_of):
    """The finished run's report (`report_of(result)`, else the result itself) into the history, once per computation."""
    from qcore.store import history

    def after(result, job):
        history.remember(report_of(result) if report_of else result, say=lambda msg: job.update(None, msg))

    return after


def run_job(key: str, name: str, fn, /, *, remember: bool = False, report_of=None, stream_metrics: bool = False,
            exclusive: bool = False, share: bool = True, **kwargs) -> None:
    """Queue `fn(**kwargs, progress=...)` as this session's job under session key `key`.

    The engine reports `progress(fraction, message)`; cancelling stops the run at its next report.
    `stream_metrics` also passes `on_metric=` (QAT streams its curves). `remember`: the finished run's report
    (`report_of(result)`, else the result) goes into the history. `exclusive`: the job times something, so it
    runs alone on all cores. `share`: an identical request from another session (same model, data, config,
    seed) shares this computation and its result.
    """
    from qcore.run.requests import request_key
    from qcore.zoo.models import LoadedModel

    previous = st.session_state.get(key)
    if previous is not None and not previous.done:
        st.warning(t("A run is already going; cancel it first."))
        return
    model = next((v.name for v in kwargs.values() if isinstance(v, LoadedModel)), None)
    owner = _session_id()
    ticket = scheduler().submit(
        name, fn, kwargs, owner=owner, key=request_key(name, fn, kwargs) if share else None, exclusive=exclusive,
        metrics=stream_metrics, after=_remember(report_of) if remember else None, user_errors=USER_ERRORS,
        model=model, cancel_on_close=bool(st.session_state.get("cancel_on_close", False)))
    st.session_state[key] = ticket
    _reaper().track(owner, ticket)


def _standing_text(snap: dict) -> str:
    if snap["status"] == JobStatus.QUEUED:
        return t("Queued: position {position}, {ahead} job(s) ahead of it on this server.").format(
            position=snap.get("position", "?"), ahead=snap.get("ahead", "?"))
    text = engine_text(snap["message"]) if snap["message"] else t("starting ...")
    if snap.get("eta_s") is not None:
        text += " · " + t("about {seconds} s left").format(seconds=int(round(snap["eta_s"])))
    return text


def _poll_seconds() -> float:
    """How often a waiting session polls: POLL_S, longer when more sessions wait than there are cores."""
    queue = scheduler()
    return min(MAX_POLL_S, POLL_S * max(1.0, queue.waiting_sessions() / max(1, queue.limits.cores)))


def _wait_for_a_near_end(job, now: dict, every: float) -> dict:
    """A running job whose ETA falls before the next poll: wait for its end here (at most the ETA plus a second)
    and return the fresh snapshot, so the result shows when it is ready rather than up to a poll later."""
    eta = now.get("eta_s")
    if now["status"] != JobStatus.RUNNING or eta is None or eta >= every or not hasattr(job, "wait_for_end"):
        return now
    return job.snapshot() if job.wait_for_end(eta + 1.0) else now


def _live_panel(key: str, job, live) -> None:
    """The polled part of a queued or running job: its place or progress, sharing, Cancel, the close option."""
    every = _poll_seconds()

    @st.fragment(run_every=every)
    def poll():
        now = _wait_for_a_near_end(job, job.snapshot(), every)
        if now["status"] not in OPEN_STATES:
            st.rerun()
        if now["status"] == JobStatus.QUEUED:
            st.info(_standing_text(now), icon=":material/hourglass_top:")
        else:
            st.progress(now["progress"], text=_standing_text(now))
        if now.get("shared", 1) > 1:
            st.caption(t("{n} sessions asked for exactly this run: they share one computation.").format(n=now["shared"]))
        c1, c2 = st.columns([1, 3])
        if c1.button(t("Cancel"), key=f"cancel_{key}"):
            job.cancel()
            st.rerun()
        if hasattr(job, "cancel_on_close"):
            job.cancel_on_close = c2.toggle(t("Cancel it if I close the page"), value=job.cancel_on_close,
                                            key=f"close_cancel_{key}",
                                            help=t("Off: the run finishes into the History even after you leave."))
        if live is not None and now["status"] == JobStatus.RUNNING:
            live(now)

    poll()


def job_result(key: str, idle_message: str, live=None):
    """Show the job under `key`: an invitation, its place in the queue or live progress with Cancel, or its end.

    Returns the finished job's result, or None (the caller then draws nothing more). While the job waits or
    runs, a fragment polls it every POLL_S seconds, draws `live(snapshot)` (e.g. charts of the metrics streamed so
    far) and reruns the page once when the job ends.
    """
    job = st.session_state.get(key)
    if job is None:
        st.info(idle_message)
        return None
    snap = job.snapshot()
    if snap["status"] in OPEN_STATES:
        _live_panel(key, job, live)
        return None
    if snap["status"] in (JobStatus.CANCELLED, JobStatus.INTERRUPTED):
        st.warning(t("Cancelled."))
    elif snap["status"] == JobStatus.FAILED:
        st.error(snap["error"])
    return snap["result"] if snap["status"] == JobStatus.DONE else None


def page_threads():
    """Torch threads for work a page does itself (not a queued job): what the running jobs leave of the cores,
    at least one, set for this script thread only."""
    return torch_threads(scheduler().spare_threads())
