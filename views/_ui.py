"""The page kit: a page's header (title, settings, current model), the model the sidebar chose, its data, and
the layers line every result shows. The shared helpers live by concern beside it: _language, _settings,
_cache, _errors, _jobs."""

from __future__ import annotations

import streamlit as st

from views._cache import cached_model, user_models
from views._errors import user_errors
from views._language import t
from views._settings import settings
from qcore.zoo.inputs import default_data
from qcore.zoo.models import LoadedModel

__all__ = ["page_header", "current_model", "data_name_for", "layer_summary"]


def page_header(title: str, caption: str | None = None) -> tuple[dict, LoadedModel]:
    """Title and caption of a page, then the sidebar's settings and the current model (a model that
    cannot load is a message, and the page stops there)."""
    st.title(title)
    if caption:
        st.caption(caption)
    with user_errors():
        return settings(), current_model()


def current_model() -> LoadedModel:
    """The model chosen in the sidebar: an uploaded one, or a cached registry model."""
    name = settings()["model"]
    if name in user_models():
        return user_models()[name]
    with st.spinner(t("Loading model ...")):  # the spinner shows only if the load takes a while
        return cached_model(name)


def data_name_for(loaded: LoadedModel) -> str:
    return settings()["data"].strip() or default_data(loaded)


def layer_summary(report) -> None:
    """How many layers this result quantized, which stay float and why, and what "accuracy" means here:
    every result page shows it, so no FP32 number passes for an INT8 one."""
    floats, quantized = report.inventory.float_layers, report.inventory.quantized_layers
    text = t("**{quantized} layers quantized**, {floats} stay float").format(
        quantized=len(quantized), floats=len(floats))
    if floats:
        st.warning(text + ": " + "; ".join(f"{f.layer} ({f.reason})" for f in floats[:8])
                   + (" ..." if len(floats) > 8 else ""))
    else:
        st.caption(text + ".")
    with st.expander(f"{t('Quantized layers')} ({len(quantized)})"):
        st.write(", ".join(quantized))
    if report.identity.scored_by != "labels":
        st.info(t("These images have no labels this model knows: every accuracy on this page is **top-1 agreement "
                  "with the FP32 model** (FP32 itself scores 100%), not an accuracy."))
