"""A trace of the upload handshake on the server, for finding where a dropped file got lost: on when QX_UPLOAD_TRACE
is set (the e2e suite sets it; app.py applies it once).

Why: a dropped file shows in st.file_uploader only after the server has answered the browser's request for upload
URLs, and Streamlit's browser code waits for that answer with no time limit. When a drop is lost, nothing on the page
says why. The e2e helpers print these lines with the browser's own log, so a failure says which side lost it: the
request never arrived, arrived for a session that had gone, named no files (the browser refused the file: how the
suite's third lost drop was found, see the README), had its answer cleared (views/_streamlit_patches.py fixes that),
or was answered.
"""

from __future__ import annotations

import functools
import logging
import os

from streamlit.runtime.app_session import AppSession
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue
from streamlit.runtime.runtime import Runtime

LOG = logging.getLogger("qx.upload_trace")
ANSWER = "file_urls_response"


def _say(text: str, *args) -> None:
    LOG.warning("[upload-trace] " + text, *args)  # warning: Streamlit's default log level shows it


def _traced_request(handle):
    @functools.wraps(handle)
    def traced(self, request):
        _say("URLs asked: session %s, request %s, files %s", self.id, request.request_id, list(request.file_names))
        return handle(self, request)
    return traced


def _traced_backmsg(handle):
    """Runtime.handle_backmsg silently drops a message for a session that disconnected or changed its client."""
    @functools.wraps(handle)
    def traced(self, session_id, msg, *, client=None):
        if msg.WhichOneof("type") == "file_urls_request":
            info = self._session_mgr.get_active_session_info(session_id)
            if info is None or (client is not None and info.client is not client):
                _say("URLs request %s dropped: session %s is %s", msg.file_urls_request.request_id, session_id,
                     "not active" if info is None else "on another client")
        return handle(self, session_id, msg, client=client)
    return traced


def _traced_send(send):
    @functools.wraps(send)
    def traced(self, session_info, msg):
        if msg.WhichOneof("type") == ANSWER:
            _say("URLs sent: session %s, request %s", session_info.session.id, msg.file_urls_response.response_id)
        return send(self, session_info, msg)
    return traced


def _traced_clear(clear):
    """Names an answer a run-start clear dropped; a full clear is flush() handing the queue out to be sent."""
    @functools.wraps(clear)
    def traced(self, retain_lifecycle_msgs: bool = False, *args, **kwargs):
        if not retain_lifecycle_msgs:
            return clear(self, retain_lifecycle_msgs, *args, **kwargs)
        before = [m.file_urls_response.response_id for m in self._queue if m.WhichOneof("type") == ANSWER]
        clear(self, retain_lifecycle_msgs, *args, **kwargs)
        after = {m.file_urls_response.response_id for m in self._queue if m.WhichOneof("type") == ANSWER}
        for lost in (r for r in before if r not in after):
            _say("URLs answer %s cleared from the queue before it was sent", lost)
    return traced  # wraps() copied the upload fix's mark: patches.apply() still sees it applied


def _traced_connect(connect):
    @functools.wraps(connect)
    def traced(self, *args, **kwargs):
        session_id = connect(self, *args, **kwargs)
        _say("session %s connected", session_id)
        return session_id
    return traced


def _traced_disconnect(disconnect):
    @functools.wraps(disconnect)
    def traced(self, session_id, *args, **kwargs):
        _say("session %s disconnected", session_id)
        return disconnect(self, session_id, *args, **kwargs)
    return traced


def apply() -> None:
    """Install the trace once, when QX_UPLOAD_TRACE is set (after the upload fix, so a clear it mends is not named).
    app.py installs it in its first run, so the first session's connection is not in the log."""
    if not os.environ.get("QX_UPLOAD_TRACE") or getattr(Runtime.handle_backmsg, "upload_traced", False):
        return
    AppSession._handle_file_urls_request = _traced_request(AppSession._handle_file_urls_request)
    Runtime.handle_backmsg = _traced_backmsg(Runtime.handle_backmsg)
    Runtime._send_message = _traced_send(Runtime._send_message)
    Runtime.connect_session = _traced_connect(Runtime.connect_session)
    Runtime.disconnect_session = _traced_disconnect(Runtime.disconnect_session)
    ForwardMsgQueue.clear = _traced_clear(ForwardMsgQueue.clear)
    Runtime.handle_backmsg.upload_traced = True


apply()
