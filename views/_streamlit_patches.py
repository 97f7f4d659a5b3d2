"""A fix for a race in Streamlit 1.67 that loses uploads: applied once, when app.py imports this module.

A file dropped on st.file_uploader first asks the server for upload URLs (a `file_urls_request`); the answer
(`file_urls_response`) waits in the session's outgoing queue until the event loop next flushes it. When a script
run starts in between, Streamlit clears that queue, keeping only lifecycle messages, and the answer is among the
messages it drops. The browser then waits for it forever: the file never shows in the uploader and "Load model"
stays disabled. On a busy server (a classroom, a job running) runs start often enough to hit this: 1 of 3 students
in our load test, and 2 of 8 drops (in each of two runs) into an app that reruns continuously (`tests/e2e/test_upload_race.py`).

The fix keeps the server's replies to the browser's own requests through the clear: `file_urls_response`, and for
the same reason `heartbeat_ack` (a lost ack makes the browser drop its connection and reconnect) and
`backend_operation_response`. They carry no script output, so keeping them cannot show a stale element. Streamlit does the same for toasts (its issue #7740). Remove this module when
Streamlit keeps them itself: `tests/app/test_streamlit_patches.py` says when.
"""

from __future__ import annotations

import functools

from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

# replies to requests the browser waits on; none of them is script output
KEPT_TYPES = frozenset({"file_urls_response", "heartbeat_ack", "backend_operation_response"})


def _keeping_answers(clear):
    """`ForwardMsgQueue.clear` that keeps the browser's pending answers when it keeps lifecycle messages."""
    @functools.wraps(clear)
    def patched(self, retain_lifecycle_msgs: bool = False, fragment_ids_this_run=None):
        answers = [m for m in self._queue if m.WhichOneof("type") in KEPT_TYPES] if retain_lifecycle_msgs else []
        clear(self, retain_lifecycle_msgs, fragment_ids_this_run)
        kept = {id(m) for m in self._queue}
        self._queue.extend(m for m in answers if id(m) not in kept)
    patched.keeps_upload_answers = True
    return patched


def apply() -> None:
    """Install the fix (once: a second call changes nothing)."""
    if not getattr(ForwardMsgQueue.clear, "keeps_upload_answers", False):
        ForwardMsgQueue.clear = _keeping_answers(ForwardMsgQueue.clear)


apply()
