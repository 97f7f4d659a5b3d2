"""The sidebar every page shares (model, data, sizes, seed, bits, granularity, symmetry, weight range) and the
QuantConfig it describes; its values live in st.session_state."""

from __future__ import annotations

import streamlit as st

from views._cache import user_models
from views._language import language_toggle, t
from qcore.zoo.models import DEFAULT_MODEL, list_models

__all__ = ["DEFAULTS", "KEPT", "settings", "sidebar", "scheme_note", "granularity_label", "weight_range_label",
           "base_config", "recovery_steps", "chosen_config", "EDITS_KEY", "layer_edits", "with_layer_edits"]

DEFAULTS = {
    "model": DEFAULT_MODEL, "data": "", "calib_size": 512, "eval_size": 10_000, "seed": 0,
    "weight_bits": 8, "act_bits": 8, "granularity": "channel", "symmetric": False, "weight_range": "auto",
}


WEIGHT_RANGE_LABELS = {"auto": "auto (for this CPU)", "full": "full (8 bits)", "reduced": "reduced (7 bits)"}


# A page's form values (evaluation images, QAT settings, ...) as the user left them when they come back to the page:
# without it Streamlit drops a widget's value when its page is left, and the form shows its defaults again.
KEPT = {"persist_state": "session"}


def weight_range_label(choice: str) -> str:
    """The sidebar's name for a weight range, in the session's language (the radio's values stay the keys)."""
    return {"auto": t("auto (for this CPU)"), "full": t("full (8 bits)"), "reduced": t("reduced (7 bits)")}[choice]


def settings() -> dict:
    """The shared sidebar's current values (defaults before the sidebar has drawn)."""
    return {k: st.session_state.get(k, v) for k, v in DEFAULTS.items()}


def _frozen_labels(label, options: list) -> callable:
    """Option labels in the language of this run, fixed now: a format_func that asked the session's language
    later (Streamlit's testing harness formats values between runs) could answer in another one."""
    return {o: label(o) for o in options}.get


def sidebar() -> None:
    """Widgets shared by every page; their values live in st.session_state. persist_state="session" keeps them when
    a run ends without drawing the sidebar (a fragment's rerun, a run cut short by a click): without it the browser
    remounted every sidebar widget at its element default (W2/A2, 1 image) and sent those back as the user's choice."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    # uploads ask for a new model/dataset; widget values can only change before the widgets draw
    if "pending_model" in st.session_state:
        st.session_state["model"] = st.session_state.pop("pending_model")
    if "pending_data" in st.session_state:
        st.session_state["data"] = st.session_state.pop("pending_data")
    specs = {s.name: s for s in list_models()}
    specs.update({name: m.spec for name, m in user_models().items()})
    if st.session_state["model"] not in specs:
        st.session_state["model"] = DEFAULT_MODEL
    with st.sidebar:
        language_toggle()
        st.header(t("Model and data"))
        st.selectbox(
            t("Model"), list(specs), key="model", persist_state="session",
            format_func=lambda n: f"{n} ({specs[n].family})",
            help=t("Built-in models are trained on Fashion-MNIST and ship with the app; torchvision models "
                   "need their ImageNet weights in the torch hub cache (or a download when online)."),
        )
        st.text_input(
            t("Dataset"), key="data", persist_state="session", placeholder=t("default for the model"),
            help=t("fashion-mnist, cifar10, or imagefolder:/path/to/folder (sub-folder per class; "
                   "ImageNet synset names such as n01440764 map to ImageNet classes)."),
        )
        st.number_input(t("Calibration images"), min_value=1, max_value=60_000, step=128, key="calib_size", persist_state="session",
                        help=t("From the train split, chosen by the seed"))
        st.number_input(t("Evaluation images"), min_value=1, max_value=100_000, step=500, key="eval_size", persist_state="session",
                        help=t("From the test split, chosen by the seed"))
        st.number_input(t("Seed"), min_value=0, max_value=2**31 - 1, step=1, key="seed", persist_state="session")
        st.header(t("Quantization"))
        st.select_slider(t("Weight bits"), options=[2, 3, 4, 5, 6, 7, 8], key="weight_bits", persist_state="session")
        st.select_slider(t("Activation bits"), options=[2, 3, 4, 5, 6, 7, 8], key="act_bits", persist_state="session")
        st.radio(t("Weight granularity"), ["channel", "tensor"], key="granularity", persist_state="session", horizontal=True,
                 format_func=_frozen_labels(granularity_label, ["channel", "tensor"]), help=t("One scale per output channel, or one for the whole tensor"))
        st.toggle(t("Symmetric activations"), key="symmetric", persist_state="session",
                  help=t("Off: asymmetric uint8-style (what x86 and ONNX Runtime U8S8 run)"))
        st.radio(t("Weight range"), list(WEIGHT_RANGE_LABELS), key="weight_range", persist_state="session",
                 format_func=_frozen_labels(weight_range_label, list(WEIGHT_RANGE_LABELS)),
                 help=t("CPUs without VNNI add pairs of u8 x s8 products in int16, which 8-bit weights overflow: "
                        "7-bit weights keep real INT8 exact there. The simulation uses the same range."))
        st.caption(scheme_note())
        if recovery_steps():
            st.caption(t("Recovery steps from the Recover page, used by Sensitivity, QAT and Deploy: {steps}").format(
                steps=" -> ".join(x.name for x in recovery_steps())))
            if st.button(t("Back to plain PTQ"), key="clear_recovery"):
                st.session_state["recovery_steps"] = ()
                st.rerun()
        _layer_edits_note()


def _layer_edits_note() -> None:
    """The per-layer edits kept on the Calibration page (they flow into base_config), with a way to drop them."""
    edits = layer_edits()
    if not edits:
        return
    st.caption(t("Layer edits kept on the Calibration page, used by Sensitivity, QAT and Deploy: {edits}").format(
        edits="; ".join(f"{name} ({describe_edit(changes)})" for name, changes in edits.items())))
    if st.button(t("Drop the layer edits"), key="clear_layer_edits"):
        st.session_state.pop(EDITS_KEY, None)
        st.rerun()


def describe_edit(changes: dict) -> str:
    """A kept edit in the engine's field names, numbers short: "act_clip=[0, 4.2], weight_bits=4"."""
    def short(v):
        return f"[{v[0]:.4g}, {v[1]:.4g}]" if isinstance(v, (tuple, list)) else str(v)
    return ", ".join(f"{k}={short(v)}" for k, v in changes.items())


def scheme_note() -> str:
    """This CPU's class and the weight range the sidebar's choice comes to here."""
    from qcore.quant.isa import cpu_isa
    from qcore.quant.qconfig import QuantConfig

    isa = cpu_isa()
    chosen = QuantConfig(weight_range=settings()["weight_range"]).resolved(isa.vnni)
    text = t("This CPU ({cpu}) has VNNI: {note}.") if isa.vnni else t("This CPU ({cpu}) has no VNNI: {note}.")
    return text.format(cpu=isa.cpu_class, note=_range_note(chosen))


def _range_note(config) -> str:
    """QuantConfig.weight_range_note() in the session's language (the engine's sentence is English)."""
    return {"reduced": t("weights use 7 bits ([-64, 63]): without VNNI, INT8 kernels add u8 x s8 pairs in int16, "
                         "which 8-bit weights overflow"),
            "full": t("weights use the full 8 bits"),
            }.get(config.weight_range) or t("weight range chosen per CPU: 7 bits without VNNI, 8 bits with it")


def granularity_label(choice: str) -> str:
    """'channel' / 'tensor' as the sidebar shows them (the values stay the engine's names)."""
    return {"channel": t("per-channel"), "tensor": t("per-tensor")}.get(choice, choice)


def base_config():
    """The QuantConfig the sidebar describes (every layer alike; pages refine it)."""
    from qcore.quant.qconfig import QuantConfig

    s = settings()
    return with_layer_edits(QuantConfig(weight_range=s["weight_range"], recovery=recovery_steps()).with_default(
        weight_bits=int(s["weight_bits"]), act_bits=int(s["act_bits"]), weight_granularity=s["granularity"],
        act_symmetric=bool(s["symmetric"])))


EDITS_KEY = "layer_edits"  # {"model": name, "layers": {layer: {LayerConfig field: value}}}, kept by the what-if editor


def layer_edits() -> dict[str, dict]:
    """The per-layer edits kept in the Calibration page's what-if editor, for the sidebar's model (layer names of
    another model mean nothing here)."""
    kept = st.session_state.get(EDITS_KEY)
    if not kept or kept.get("model") != settings()["model"]:
        return {}
    return kept["layers"]


def with_layer_edits(config):
    """`config` with the kept layer edits on top: the one place they join the config every page runs."""
    for name, changes in layer_edits().items():
        config = config.with_layer(name, **changes)
    return config


def recovery_steps() -> tuple:
    """The recovery steps the Recover page sent to the other pages (empty: plain PTQ)."""
    return tuple(st.session_state.get("recovery_steps", ()))


def chosen_config(upload, default):
    """The QuantConfig from an uploaded JSON file when there is one, else `default`; raises
    ValueError (or UnicodeDecodeError) with the reason when the file is not a valid config. The
    sidebar's Weight range applies to an uploaded file too (its own is for the CPU it came from)."""
    from dataclasses import replace

    from qcore.quant.qconfig import QuantConfig

    if upload is None:
        return default
    return replace(QuantConfig.from_json(upload.getvalue().decode()), weight_range=settings()["weight_range"])
