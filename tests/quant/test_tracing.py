"""A trace in one thread must not break forward passes in others (fx patches nn.Module globally)."""

import threading

import torch
from torch import fx, nn

from qcore.quant.tracing import symbolic_trace


class PausesWhileTraced(nn.Module):
    """Its forward waits (during the trace) until the other thread has run its own forward."""

    def __init__(self, go: threading.Event, done: threading.Event):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.go, self.done = go, done

    def forward(self, x):
        self.go.set()
        self.done.wait(10)
        return self.lin(x)


def _forward_during_trace(trace) -> list:
    go, done, outcome = threading.Event(), threading.Event(), []
    other = nn.Sequential(nn.Linear(4, 4), nn.ReLU())

    def elsewhere():
        go.wait(10)
        try:
            outcome.append(other(torch.ones(1, 4)).shape)
        except Exception as exc:
            outcome.append(exc)
        done.set()

    t = threading.Thread(target=elsewhere)
    t.start()
    gm = trace(PausesWhileTraced(go, done))
    t.join(10)
    assert any(n.op == "call_module" and n.target == "lin" for n in gm.graph.nodes)
    return outcome


def test_plain_fx_trace_breaks_other_threads():
    outcome = _forward_during_trace(fx.symbolic_trace)
    assert isinstance(outcome[0], NameError)  # the hazard this module exists for


def test_qcore_trace_leaves_other_threads_alone():
    assert _forward_during_trace(symbolic_trace) == [torch.Size([1, 4])]
