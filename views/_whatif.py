"""The Calibration page's what-if editor: one layer's clip range (typed or dragged), bits, granularity, symmetry or
float, measured by a qcore WhatIf session (its layer SQNR and the model's accuracy), with Reset and Keep.

The session holds a sim it reconfigures for every edit, so it lives in this browser session's state, never in a
shared cache; it calibrates its own copy of the (shared, read-only) model. Kept edits go to the sidebar's config
(views._settings.EDITS_KEY), which Sensitivity, QAT and Deploy run.
"""

from __future__ import annotations

import json

import streamlit as st

from views._language import t
from views._settings import EDITS_KEY, base_config, granularity_label, layer_edits, settings

__all__ = ["whatif_editor"]

SESSION_KEY = "whatif_session"
MAX_IMAGES = 1000  # evaluation images an edit is measured on
BITS = [2, 3, 4, 5, 6, 7, 8]


def _config_key(config) -> str:
    """The config as text, the layers' order aside (a re-kept layer moves to the end of the tuple)."""
    return json.dumps(config.resolved().to_dict(), sort_keys=True)


def _identity(loaded, eval_size: int) -> tuple:
    s = settings()
    return (loaded.name, loaded.info.get("sha256"), s["data"], int(s["calib_size"]), int(s["seed"]), eval_size)


def _session(loaded, eval_size: int):
    """This browser session's WhatIf for the sidebar's model, data and config (None until opened)."""
    held = st.session_state.get(SESSION_KEY)
    if held and held[0] == _identity(loaded, eval_size) and _config_key(held[1].config) == _config_key(base_config()):
        return held[1]
    return None


def _open(loaded, eval_size: int):
    from qcore.analysis.whatif import WhatIf

    s = settings()
    with st.spinner(t("Calibrating a copy of the model and measuring the current config on {n} images...").format(
            n=eval_size)):
        session = WhatIf.build(loaded, base_config(), s["data"] or None, int(s["calib_size"]), eval_size, int(s["seed"]))
    st.session_state[SESSION_KEY] = (_identity(loaded, eval_size), session)
    return session


def whatif_editor(loaded, layer: str, eval_size: int) -> None:
    """The editor for `layer` (the page's chosen layer), measured on up to MAX_IMAGES evaluation images."""
    eval_size = min(MAX_IMAGES, int(eval_size))
    st.subheader(t("What if: edit this layer"))
    st.caption(t("Type or drag a clip range, or change this layer's bits, weight granularity, symmetry, or keep it in "
                 "float: its output SQNR and the model's accuracy on {n} images are measured again, re-running only "
                 "the layers after it. It starts from the config Sensitivity, QAT and Deploy use (the sidebar, "
                 "recovery steps and kept edits); Keep adds the edit to it.").format(n=eval_size))
    session = _session(loaded, eval_size)
    if session is None:
        if not st.button(t("Open the what-if editor"), key="whatif_open"):
            return
        session = _open(loaded, eval_size)
    if layer not in session.layers:
        st.info(t("{layer} has no quantizer in this config.").format(layer=layer))
        return
    _edit(session, layer)


def _defaults(session, layer: str) -> dict:
    """The widgets' values for the current config of `layer` (its range as the current config calibrates it, not
    as the last edit left the sim)."""
    from qcore.analysis.whatif import layer_config

    cfg, base = layer_config(session.config, layer), session.layer.base
    stats = session.base_stats[layer]
    lo, hi = (base.clip_min, base.clip_max) if base.clip_min is not None else (min(stats.min, 0.0), max(stats.max, 0.0))
    return {"wi_lo": float(lo), "wi_hi": float(hi), "wi_slider": (float(lo), float(hi)), "wi_wbits": cfg.weight_bits,
            "wi_abits": cfg.act_bits, "wi_gran": cfg.weight_granularity if cfg.weight_granularity != "group" else "channel",
            "wi_sym": cfg.act_symmetric, "wi_float": not cfg.enabled}


def _slider_bounds(session, layer: str, d: dict) -> tuple[float, float]:
    stats = session.base_stats[layer]
    lo, hi = min(stats.min, 0.0, d["wi_lo"]), max(stats.max, 0.0, d["wi_hi"])
    return float(lo * 1.25), float(hi * 1.25) if hi > 0 else 1.0


def _from_slider() -> None:
    st.session_state["wi_lo"], st.session_state["wi_hi"] = st.session_state["wi_slider"]


def _from_inputs(bounds: tuple[float, float]) -> None:
    lo, hi = (min(max(st.session_state[k], bounds[0]), bounds[1]) for k in ("wi_lo", "wi_hi"))
    st.session_state["wi_slider"] = (lo, hi)


def _reset() -> None:
    st.session_state["wi_for"] = None  # the widgets take the current config's values again


@st.fragment
def _edit(session, layer: str) -> None:
    """Widgets, measurement and Reset/Keep; a fragment, so an edit re-runs this part of the page only."""
    if session.layer is None or session.layer.name != layer:
        with st.spinner(t("Running the model up to {layer} once...").format(layer=layer)):
            session.choose(layer)
    d = _defaults(session, layer)
    if st.session_state.get("wi_for") != (id(session), layer, _config_key(session.config)):
        st.session_state.update(d)
        st.session_state["wi_for"] = (id(session), layer, _config_key(session.config))
    changes = _widgets(session, layer, d)
    result = session.edit(**changes) if changes != session.layer.last.changes else session.layer.last
    _show(result)
    b1, b2, _ = st.columns([1, 1, 4])
    b1.button(t("Reset"), key="wi_reset", on_click=_reset, disabled=not result.changes)
    if b2.button(t("Keep"), key="wi_keep", type="primary", disabled=not result.changes):
        session.keep()
        edits = dict(layer_edits())
        edits[layer] = {**edits.get(layer, {}), **result.changes}
        st.session_state[EDITS_KEY] = {"model": settings()["model"], "layers": edits}
        st.rerun()


def _widgets(session, layer: str, d: dict) -> dict:
    """Draw the editor's widgets; the LayerConfig changes they ask for (relative to the current config)."""
    has_weights = layer in session.sim.weight_layers
    bounds = _slider_bounds(session, layer, d)
    c1, c2 = st.columns(2)
    c1.number_input(t("Clip min"), key="wi_lo", format="%.4f", on_change=_from_inputs, args=(bounds,))
    c2.number_input(t("Clip max"), key="wi_hi", format="%.4f", on_change=_from_inputs, args=(bounds,))
    st.slider(t("Clip range"), min_value=bounds[0], max_value=bounds[1], key="wi_slider", on_change=_from_slider,
              step=(bounds[1] - bounds[0]) / 1000)
    w1, w2, w3, w4 = st.columns(4)
    w1.select_slider(t("Weight bits"), BITS, key="wi_wbits", disabled=not has_weights)
    w2.select_slider(t("Activation bits"), BITS, key="wi_abits")
    w3.radio(t("Weight granularity"), ["channel", "tensor"], key="wi_gran",
             format_func={o: granularity_label(o) for o in ("channel", "tensor")}.get,
             disabled=not has_weights, horizontal=True)
    w4.toggle(t("Symmetric activations"), key="wi_sym")
    w4.toggle(t("Keep in float"), key="wi_float")
    v = st.session_state
    if v["wi_float"]:
        return {"enabled": False}
    changes = {"act_bits": int(v["wi_abits"]), "act_symmetric": bool(v["wi_sym"])}
    if has_weights:
        changes.update(weight_bits=int(v["wi_wbits"]), weight_granularity=v["wi_gran"])
    lo, hi = float(v["wi_lo"]), float(v["wi_hi"])
    if (lo, hi) != (d["wi_lo"], d["wi_hi"]):
        if not lo < hi:
            st.warning(t("Clip min must be below clip max; the range is left as calibrated."))
        else:
            changes["act_clip"] = (lo, hi)
    from qcore.analysis.whatif import layer_config

    stored = layer_config(session.config, layer)
    return {k: val for k, val in changes.items() if getattr(stored, k) != val} | ({} if stored.enabled else {"enabled": True})


def _show(result) -> None:
    m1, m2, m3 = st.columns(3)
    m1.metric(t("Accuracy"), f"{result.accuracy:.2%}",
              t("{delta} vs the current config").format(delta=f"{result.delta_accuracy * 100:+.2f}pt"))
    m2.metric(t("Layer output SQNR"), f"{result.layer_sqnr_db:.2f} dB",
              t("{delta} vs the current config").format(delta=f"{result.delta_sqnr_db:+.2f} dB"))
    m3.metric(t("Measured in"), f"{result.seconds:.2f} s")
    rng = (t("float") if result.clip_min is None else
           f"[{result.clip_min:.4g}, {result.clip_max:.4g}] ({result.range_method})")
    st.caption(t("Range applied: {range}. SQNR against FP32 at this layer's output on {k} images; accuracy on {n} "
                 "images{recal}.").format(
        range=rng, k=result.sqnr_images, n=result.eval_size,
        recal=t("; {n} later quantizers calibrated again for the new weights").format(n=result.recalibrated)
        if result.recalibrated else ""))
