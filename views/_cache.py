"""What sessions share or keep: cached registry models (read-only: qcore copies before changing one), a
session's uploads, evaluation sets, FP32 results and small statistics passes."""

from __future__ import annotations

import uuid
from pathlib import Path

import streamlit as st

from views._jobs import page_threads
from views._language import t
from qcore.analysis.evaluate import EvalResult, evaluate
from qcore.zoo.data import ImageSet, data_dir, eval_subset
from qcore.zoo.inputs import check_compatible, decode_for, default_data
from qcore.zoo.models import LoadedModel, load_model, model_identity

__all__ = ["cached_model", "user_models", "upload_dir", "cached_eval_set", "fp32_eval", "layer_stats", "model_identity",
           "shared_graphs", "remember_graph"]


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_model(name: str) -> LoadedModel:
    """Registry models, shared by every session: read-only (qcore copies before changing)."""
    return load_model(name)


def user_models() -> dict[str, LoadedModel]:
    """Models this session uploaded (never shared with other sessions)."""
    return st.session_state.setdefault("user_models", {})


def upload_dir() -> Path:
    """This session's folder for uploaded files, under the data directory."""
    sid = st.session_state.setdefault("upload_id", uuid.uuid4().hex[:12])
    path = data_dir() / "uploads" / sid
    path.mkdir(parents=True, exist_ok=True)
    return path


@st.cache_data(show_spinner=False, max_entries=16)
def cached_eval_set(name: str, size: int, seed: int, decode: tuple[int, str] | None = None) -> ImageSet:
    """Evaluation images; `decode` (size, interpolation) is the model's, for image folders."""
    return eval_subset(name, size, seed, decode)


@st.cache_resource
def _shared_results() -> dict:
    """Finished FP32 evaluations shared by all sessions (immutable results, keyed by inputs)."""
    return {}


def fp32_eval(loaded: LoadedModel, data_name: str, size: int, seed: int) -> EvalResult:
    """FP32 accuracy of the model on the evaluation subset, with a progress bar the first time."""
    store = _shared_results()
    identity = model_identity(loaded)
    key = (identity, data_name, size, seed)
    # the bar's slot is drawn on every run: an element drawn only when the result is missing moves every later
    # element down one place in that run, the browser remounts them, and a file being dropped on the page's
    # uploader meanwhile is lost (it never shows, or shows and vanishes)
    slot = st.empty()
    if key not in store:
        data = cached_eval_set(data_name, size, seed, decode_for(loaded))
        check_compatible(loaded, data)
        bar = slot.progress(0.0, text=t("FP32 evaluation of {model} on {n} images").format(model=loaded.name, n=len(data)))
        with page_threads():
            result = evaluate(loaded.module, loaded.spec.preprocess, data,
                              progress=lambda f, _msg: bar.progress(f or 0.0))
        slot.empty()
        while len(store) >= 32:
            store.pop(next(iter(store)))
        store[key] = result
    return store[key]


def layer_stats(loaded: LoadedModel, data: str | None, seed: int, images: int = 64):
    """A small statistics pass (shared, read-only) for pages that illustrate with real activations; the
    spinner is drawn here, not by the cache, so its text follows the session's language."""
    with st.spinner(t("Collecting activation statistics ...")):
        return _layer_stats(loaded, data, seed, images)


@st.cache_resource(show_spinner=False, max_entries=8, hash_funcs={LoadedModel: model_identity})
def _layer_stats(loaded: LoadedModel, data: str | None, seed: int, images: int = 64):
    from qcore.quant.quantsim import QuantSim
    from qcore.zoo.data import calibration_subset
    from qcore.zoo.inputs import batches

    calib = calibration_subset(data or default_data(loaded), images, seed, decode_for(loaded))
    sim = QuantSim(loaded.module)
    with page_threads():
        return sim, sim.collect_stats(list(batches(calib.images, loaded.spec.preprocess)))


@st.cache_resource(show_spinner=False)
def shared_graphs() -> dict:
    """Finished graph views (ModelGraph and its calibrated sim, read-only) shared by all sessions, keyed by model,
    config, data, calibration images, seed and the sensitivity sweep they carry: the same request never runs twice."""
    return {}


def remember_graph(key: tuple, result) -> None:
    store = shared_graphs()
    while len(store) >= 8:  # a sim of an ImageNet model holds its weights: keep a few
        store.pop(next(iter(store)))
    store[key] = result
