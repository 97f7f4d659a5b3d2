"""CLI progress: a status line rewritten in place on a terminal, one line per stage in a file or a pipe."""

import io

from qcore.console import ConsoleProgress, stage_of


def _updates(progress) -> None:
    """What a run reports: hundreds of counter updates in three stages."""
    for n in range(1, 201):
        progress(n / 200 * 0.5, f"statistics pass: {n * 8}/1600 images")
    for i in range(1, 101):
        progress(0.5 + i / 200, f"timing: round {i}/100")
    progress(1.0, "evaluating every path")


def test_stage_ignores_counters_and_numbers():
    assert stage_of("statistics pass: 32/256 images") == stage_of("statistics pass: 64/256 images")
    assert stage_of("PTQ baseline: mse (2/4)") == stage_of("PTQ baseline: mse (3/4)")
    assert stage_of("evaluating max") != stage_of("evaluating mse")


def test_a_file_or_pipe_gets_one_line_per_stage_and_no_carriage_returns():
    out = io.StringIO()  # not a TTY, as a file or a pipe is not
    progress = ConsoleProgress(out)
    _updates(progress)
    progress.end()
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == ["statistics pass: 8/1600 images", "timing: round 1/100", "evaluating every path"]


def test_a_terminal_rewrites_one_line_and_keeps_stages_when_asked():
    out = io.StringIO()
    progress = ConsoleProgress(out, tty=True)
    _updates(progress)
    progress.end()
    text = out.getvalue()
    assert text.count("\r") == 301 and text.count("\n") == 1  # every update rewrites the one line
    kept = io.StringIO()
    progress = ConsoleProgress(kept, keep_stages=True, tty=True)
    _updates(progress)
    progress.line("epoch 1 (step 10): fake-quant 90.00%")
    lines = [line.split("\r")[-1].rstrip() for line in kept.getvalue().split("\n")]
    # each stage's last update stays on screen, and an epoch's line has its own
    assert lines == ["statistics pass: 1600/1600 images", "timing: round 100/100", "evaluating every path",
                     "epoch 1 (step 10): fake-quant 90.00%", ""]


def test_a_long_stage_in_a_file_prints_its_latest_message_every_heartbeat():
    """Bias correction over 53 layers is one stage of minutes: the log shows where it is about every 30 s (the first
    update 30 s or more after the last line)."""
    from qcore.console import HEARTBEAT_S

    now = [0.0]
    out = io.StringIO()
    progress = ConsoleProgress(out, clock=lambda: now[0])
    for i in range(1, 54):  # one layer every 7 s: 371 s in one stage
        progress(i / 53, f"bias correction features.{i}.conv.0.0 ({i}/53)")
        now[0] += 7.0
    lines = out.getvalue().splitlines()
    # the first update, then the first update at least HEARTBEAT_S (30 s) after the last line: every 5th (35 s)
    assert HEARTBEAT_S == 30.0
    assert lines == [f"bias correction features.{i}.conv.0.0 ({i}/53)" for i in range(1, 54, 5)]
