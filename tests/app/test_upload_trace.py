"""The upload trace (views/_upload_trace.py) that e2e failures print: off unless asked for, and it names an answer a
run-start clear drops. Each case runs in its own interpreter: the trace patches Streamlit's classes for the process."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUEUE_WITH_AN_ANSWER = """
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue
queue = ForwardMsgQueue()
answer = ForwardMsg()
answer.file_urls_response.response_id = "request-7"
queue.enqueue(answer)
"""


def _run(code: str, trace: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "QX_UPLOAD_TRACE"} | ({"QX_UPLOAD_TRACE": "1"} if trace else {})
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_without_the_fix_a_run_start_clear_is_named():
    said = _run("import views._upload_trace" + QUEUE_WITH_AN_ANSWER + "queue.clear(retain_lifecycle_msgs=True)", True)
    assert "[upload-trace] URLs answer request-7 cleared from the queue before it was sent" in said


def test_with_the_fix_nothing_is_named_and_the_fix_still_counts_as_applied():
    said = _run("import views._streamlit_patches as fix, views._upload_trace" + QUEUE_WITH_AN_ANSWER
                + "queue.clear(retain_lifecycle_msgs=True)\n"
                  "assert [m.file_urls_response.response_id for m in queue.flush()] == ['request-7']\n"
                  "before = ForwardMsgQueue.clear; fix.apply(); assert ForwardMsgQueue.clear is before", True)
    assert "cleared" not in said


def test_a_flush_is_not_a_loss_and_without_the_variable_nothing_is_traced():
    assert "upload-trace" not in _run("import views._upload_trace" + QUEUE_WITH_AN_ANSWER + "queue.flush()", True)
    said = _run("import views._upload_trace" + QUEUE_WITH_AN_ANSWER + "queue.clear(retain_lifecycle_msgs=True)\n"
                "from streamlit.runtime.runtime import Runtime\nassert not hasattr(Runtime.handle_backmsg, "
                "'upload_traced')", False)
    assert "upload-trace" not in said


def test_a_request_and_its_answer_are_named_with_their_files():
    said = _run("""
import types
import views._upload_trace
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.app_session import AppSession
from streamlit.runtime.runtime import Runtime
sent = []
session = types.SimpleNamespace(id="s-1", _enqueue_forward_msg=sent.append, _uploaded_file_mgr=types.SimpleNamespace(
    get_upload_urls=lambda session_id, names: []))
request = BackMsg().file_urls_request
request.request_id, request.file_names[:] = "r-1", ["weights.pt"]
AppSession._handle_file_urls_request(session, request)
assert sent[0].file_urls_response.response_id == "r-1"
written = []
info = types.SimpleNamespace(session=session, client=types.SimpleNamespace(write_forward_msg=written.append))
Runtime._send_message(object(), info, sent[0])
assert written == sent
""", True)
    assert "URLs asked: session s-1, request r-1, files ['weights.pt']" in said
    assert "URLs sent: session s-1, request r-1" in said
