"""UI helpers shared by every page: the sidebar, cached engine calls, and error display.

Cached models are shared by every browser session (st.cache_resource), so nothing here or in
the pages may mutate them; experiments work on copies made inside qcore (QuantSim deep-copies).
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from qcore.zoo.data import DataUnavailable, ImageSet, data_dir, eval_subset
from qcore.analysis.evaluate import EvalResult, evaluate
from qcore.zoo.inputs import check_compatible, decode_for, default_data
from qcore.zoo.models import DEFAULT_MODEL, LoadedModel, ModelUnavailable, list_models, load_model, model_identity

USER_ERRORS = (ModelUnavailable, DataUnavailable, ValueError, FileNotFoundError, FloatingPointError)

DEFAULTS = {
    "model": DEFAULT_MODEL, "data": "", "calib_size": 512, "eval_size": 10_000, "seed": 0,
    "weight_bits": 8, "act_bits": 8, "granularity": "channel", "symmetric": False, "weight_range": "auto",
}
WEIGHT_RANGE_LABELS = {"auto": "auto (for this CPU)", "full": "full (8 bits)", "reduced": "reduced (7 bits)"}


def weight_range_label(choice: str) -> str:
    """The sidebar's name for a weight range, in the session's language (the radio's values stay the keys)."""
    return {"auto": t("auto (for this CPU)"), "full": t("full (8 bits)"), "reduced": t("reduced (7 bits)")}[choice]


def settings() -> dict:
    """The shared sidebar's current values (defaults before the sidebar has drawn)."""
    return {k: st.session_state.get(k, v) for k, v in DEFAULTS.items()}


def init_language() -> str:
    """The session's language before anything is drawn: ?lang=ko|en when the URL changed it, else the
    session's choice, else the browser's locale. The sidebar's toggle writes the choice back to the URL."""
    from qcore.i18n import pick_language

    query = st.query_params.get("lang")
    if query != st.session_state.get("_lang_synced"):  # the URL itself changed (a link, a typed ?lang=)
        st.session_state["lang_choice"] = pick_language(query, st.session_state.get("lang_choice"), None)
    st.session_state.setdefault("_lang_default", pick_language(None, None, getattr(st.context, "locale", None)))
    if "lang_choice" not in st.session_state:
        st.session_state["lang_choice"] = st.session_state["_lang_default"]
    return st.session_state["lang_choice"]


def t(msgid: str) -> str:
    """`msgid` (English) in the session's language, from the gettext catalog (qcore.i18n). Before app.py's
    init_language has run (a page run on its own, as AppTest's switch_page does after a first test), ?lang= decides."""
    from qcore.i18n import pick_language, translate

    lang = st.session_state.get("lang_choice") or pick_language(st.query_params.get("lang"), None, None)
    return translate(msgid, lang)


def _language_toggle() -> None:
    from qcore.i18n import LANGUAGE_NAMES, LANGUAGES

    st.radio(t("Language"), list(LANGUAGES), key="lang_choice", format_func=LANGUAGE_NAMES.get, horizontal=True,
             label_visibility="collapsed")
    choice = st.session_state["lang_choice"]
    if "lang" in st.query_params or choice != st.session_state["_lang_default"]:  # URLs stay clean by default
        st.query_params["lang"] = choice
    st.session_state["_lang_synced"] = st.query_params.get("lang")


def _frozen_labels(label, options: list) -> callable:
    """Option labels in the language of this run, fixed now: a format_func that asked the session's language
    later (Streamlit's testing harness formats values between runs) could answer in another one."""
    return {o: label(o) for o in options}.get


def sidebar() -> None:
    """Widgets shared by every page; their values live in st.session_state."""
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
        _language_toggle()
        st.header(t("Model and data"))
        st.selectbox(
            t("Model"), list(specs), key="model",
            format_func=lambda n: f"{n} ({specs[n].family})",
            help=t("Built-in models are trained on Fashion-MNIST and ship with the app; torchvision models "
                   "need their ImageNet weights in the torch hub cache (or a download when online)."),
        )
        st.text_input(
            t("Dataset"), key="data", placeholder=t("default for the model"),
            help=t("fashion-mnist, cifar10, or imagefolder:/path/to/folder (sub-folder per class; "
                   "ImageNet synset names such as n01440764 map to ImageNet classes)."),
        )
        st.number_input(t("Calibration images"), min_value=1, max_value=60_000, step=128, key="calib_size",
                        help=t("From the train split, chosen by the seed"))
        st.number_input(t("Evaluation images"), min_value=1, max_value=100_000, step=500, key="eval_size",
                        help=t("From the test split, chosen by the seed"))
        st.number_input(t("Seed"), min_value=0, max_value=2**31 - 1, step=1, key="seed")
        st.header(t("Quantization"))
        st.select_slider(t("Weight bits"), options=[2, 3, 4, 5, 6, 7, 8], key="weight_bits")
        st.select_slider(t("Activation bits"), options=[2, 3, 4, 5, 6, 7, 8], key="act_bits")
        st.radio(t("Weight granularity"), ["channel", "tensor"], key="granularity", horizontal=True,
                 format_func=_frozen_labels(granularity_label, ["channel", "tensor"]), help=t("One scale per output channel, or one for the whole tensor"))
        st.toggle(t("Symmetric activations"), key="symmetric",
                  help=t("Off: asymmetric uint8-style (what x86 and ONNX Runtime U8S8 run)"))
        st.radio(t("Weight range"), list(WEIGHT_RANGE_LABELS), key="weight_range",
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
    return QuantConfig(weight_range=s["weight_range"], recovery=recovery_steps()).with_default(
        weight_bits=int(s["weight_bits"]), act_bits=int(s["act_bits"]), weight_granularity=s["granularity"],
        act_symmetric=bool(s["symmetric"]))


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
    if key not in store:
        data = cached_eval_set(data_name, size, seed, decode_for(loaded))
        check_compatible(loaded, data)
        bar = st.progress(0.0, text=t("FP32 evaluation of {model} on {n} images").format(model=loaded.name, n=len(data)))
        with page_threads():
            result = evaluate(loaded.module, loaded.spec.preprocess, data,
                              progress=lambda f, _msg: bar.progress(f or 0.0))
        bar.empty()
        while len(store) >= 32:
            store.pop(next(iter(store)))
        store[key] = result
    return store[key]


def data_name_for(loaded: LoadedModel) -> str:
    return settings()["data"].strip() or default_data(loaded)


def layer_summary(report) -> None:
    """How many layers this result quantized, which stay float and why, and what "accuracy" means here:
    every result page shows it, so no FP32 number passes for an INT8 one."""
    floats = report.float_layers
    text = t("**{quantized} layers quantized**, {floats} stay float").format(
        quantized=len(report.quantized_layers), floats=len(floats))
    if floats:
        st.warning(text + ": " + "; ".join(f"{f['layer']} ({f['reason']})" for f in floats[:8])
                   + (" ..." if len(floats) > 8 else ""))
    else:
        st.caption(text + ".")
    with st.expander(f"{t('Quantized layers')} ({len(report.quantized_layers)})"):
        st.write(", ".join(report.quantized_layers))
    if report.scored_by != "labels":
        st.info(t("These images have no labels this model knows: every accuracy on this page is **top-1 agreement "
                  "with the FP32 model** (FP32 itself scores 100%), not an accuracy."))


def page_threads():
    """Torch threads for work a page does itself (not a queued job): what the running jobs leave of the cores,
    at least one, set for this script thread only."""
    from views._jobs import scheduler
    from qcore.run.scheduler import torch_threads

    return torch_threads(scheduler().spare_threads())


@contextmanager
def user_errors():
    """Show qcore's user-facing errors as messages, never as tracebacks."""
    try:
        yield
    except USER_ERRORS as exc:
        st.error(str(exc))
        st.stop()


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
