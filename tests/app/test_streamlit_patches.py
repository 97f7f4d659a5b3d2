"""The upload-race fix (views/_streamlit_patches.py): what it keeps through a queue clear, and whether it is still
needed. The browser-level check, a file dropped into an app that reruns without pause, is tests/e2e/test_upload_race.py."""

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

import views._streamlit_patches as patches


def _queue_with_an_answer_and_output() -> tuple[ForwardMsgQueue, ForwardMsg]:
    queue = ForwardMsgQueue()
    answer = ForwardMsg()
    answer.file_urls_response.response_id = "request-1"
    queue.enqueue(answer)
    output = ForwardMsg()
    output.metadata.delta_path[:] = [0, 0]
    output.delta.new_element.markdown.body = "stale output of the run that is being replaced"
    queue.enqueue(output)
    return queue, answer


def test_a_run_starting_keeps_the_upload_urls_the_browser_waits_for_and_drops_the_old_output():
    queue, answer = _queue_with_an_answer_and_output()
    queue.clear(retain_lifecycle_msgs=True)  # what AppSession does when a script run starts
    assert queue.flush() == [answer]


def test_a_full_clear_still_drops_everything():
    queue, _ = _queue_with_an_answer_and_output()
    queue.clear()
    assert queue.flush() == []


def test_applying_twice_wraps_once():
    before = ForwardMsgQueue.clear
    patches.apply()
    assert ForwardMsgQueue.clear is before


def test_streamlit_itself_still_drops_the_answer_so_the_fix_is_still_needed():
    """Fails once Streamlit keeps file_urls_response through a clear itself: then delete the patch module."""
    queue, _ = _queue_with_an_answer_and_output()
    ForwardMsgQueue.clear.__wrapped__(queue, retain_lifecycle_msgs=True)
    assert queue.flush() == [], "Streamlit keeps upload answers now: remove views/_streamlit_patches.py"


def test_a_fragment_run_keeps_the_answer_once():
    """Streamlit keeps non-delta messages through a fragment run's clear itself: the answer must not be doubled."""
    queue, answer = _queue_with_an_answer_and_output()
    queue.clear(retain_lifecycle_msgs=True, fragment_ids_this_run=["fragment-1"])
    assert [m for m in queue.flush() if m.WhichOneof("type") == "file_urls_response"] == [answer]


def test_a_heartbeat_ack_survives_a_run_starting():
    """A lost ack makes the browser drop its connection and reconnect (widgets disabled meanwhile)."""
    queue = ForwardMsgQueue()
    ack = ForwardMsg()
    ack.heartbeat_ack = True
    queue.enqueue(ack)
    queue.clear(retain_lifecycle_msgs=True)
    assert queue.flush() == [ack]
