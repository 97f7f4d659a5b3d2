"""qcore's user-facing errors shown as messages on a page, never as tracebacks."""

from __future__ import annotations

from contextlib import contextmanager

import streamlit as st

from qcore.zoo.data import DataUnavailable
from qcore.zoo.models import ModelUnavailable

__all__ = ["USER_ERRORS", "user_errors"]

USER_ERRORS = (ModelUnavailable, DataUnavailable, ValueError, FileNotFoundError, FloatingPointError)


@contextmanager
def user_errors():
    """Show qcore's user-facing errors as messages, never as tracebacks."""
    try:
        yield
    except USER_ERRORS as exc:
        st.error(str(exc))
        st.stop()
