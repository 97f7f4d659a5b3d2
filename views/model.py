"""Model page: the chosen model, its FP32 accuracy measured here, what gets quantized, its layers, and uploads."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from views._cache import cached_eval_set, fp32_eval, model_identity, upload_dir, user_models
from views._errors import USER_ERRORS, user_errors
from views._language import t
from views._settings import settings
from views._ui import current_model, data_name_for
from qcore.analysis.layers import model_facts
from qcore.zoo.data import extract_image_archive
from qcore.zoo.images import display_array, load_image_tensor, top_classes
from qcore.zoo.inputs import check_compatible, decode_for
from qcore.zoo.models import BUILTIN, TORCHVISION, LoadedModel, layer_table
from qcore.zoo.preprocess import PRESETS, parse_floats, parse_shape
from qcore.zoo.timm_models import timm_names
from qcore.zoo.user_models import UPLOAD_TYPES, load_user_model

s = settings()
st.title(t("Quantization Explorer"))
st.caption(t("What quantization does to a real vision model, and how to choose how to quantize it."))


@st.cache_resource(show_spinner=False, max_entries=16, hash_funcs={LoadedModel: model_identity})
def _facts(loaded: LoadedModel) -> dict:
    return model_facts(loaded)


def facts(loaded: LoadedModel) -> dict:
    """The model's layer facts; the spinner is drawn here so its text follows the session's language."""
    with st.spinner(t("Finding the layers to quantize ...")):
        return _facts(loaded)


with user_errors():
    loaded = current_model()
    data_name = data_name_for(loaded)
    result = fp32_eval(loaded, data_name, s["eval_size"], s["seed"])
    data = cached_eval_set(data_name, s["eval_size"], s["seed"], decode_for(loaded))
    scored_by = check_compatible(loaded, data)
    info = facts(loaded)

spec = loaded.spec
st.subheader(spec.name)
st.write(spec.description)
cols = st.columns(5)
if scored_by == "labels":
    cols[0].metric(t("FP32 top-1"), f"{result.top1:.2%}", help=t("Measured now on {n} {data} test images").format(n=result.n, data=data.name))
    cols[1].metric(t("FP32 top-5"), f"{result.top5:.2%}")
else:
    cols[0].metric(t("FP32 top-1"), t("no labels"), help=t("These images have no labels this model knows: experiments "
                                                            "score them by top-1 agreement with FP32, logit SQNR and KL."))
    cols[1].metric(t("Images"), f"{result.n:,}")
cols[2].metric(t("Parameters"), f"{loaded.params:,}")
cols[3].metric(t("MACs per image"), f"{loaded.macs / 1e6:.1f} M")
inventory = info["inventory"]
cols[4].metric(t("Quantized layers"), f"{len(inventory.quantized_layers)}",
               help=t("{n} layer(s) with weights stay float").format(n=len(inventory.float_layers)))
st.caption(t("Format: {format}. Input {shape}, {classes} classes, weights: {weights}. Preprocessing: {pre}. "
             "Evaluated on {n} images of {data} (test split).").format(
    format=info['format'] + (f" ({info['arch']})" if info['arch'] else ""), shape="x".join(map(str, spec.input_shape)),
    classes=len(spec.class_names), weights=spec.weight_source, pre=info['preprocess'], n=result.n, data=data.name))
if inventory.float_layers:
    st.warning(t("{n} layer(s) stay float: {layers}").format(
        n=len(inventory.float_layers), layers="; ".join(f"{f.layer} ({f.reason})" for f in inventory.float_layers[:8])))

st.subheader(t("Predictions on test images (top-5)"))
n_show = min(6, len(data))
cols = st.columns(6)
for i in range(n_show):
    x = data.images[i: i + 1]
    with cols[i]:
        st.image(display_array(x[0]), width=112, clamp=True)
        top = top_classes(loaded, x, k=5)
        true = int(data.labels[i])
        if scored_by == "labels":
            mark = ":green[**✓**]" if int(result.predictions[i]) == true else ":red[**✗**]"
            st.markdown(f"{mark} {t('true:')} {data.class_names[true] if true < len(data.class_names) else true}")
        st.caption("  \n".join(f"{name[:22]}: {p:.0%}" for name, p in top))

with st.expander(t("Architecture: every layer, its output shape, parameters and MACs")):
    rows = layer_table(loaded.module, spec.input_shape)
    table = pd.DataFrame(rows)
    table = table.rename(columns={"layer": t("layer"), "type": t("type"), "output_shape": t("output shape"),
                                  "params": t("parameters"), "macs": t("MACs")})
    st.dataframe(table, hide_index=True, width="stretch", height=360)

st.subheader(t("Your own model or images"))
tab_model, tab_data, tab_images = st.tabs([t("Upload a model"), t("Upload a dataset (.zip)"), t("Classify images")])


def _preprocess_widgets() -> tuple[str | None, dict]:
    """The preprocessing preset and any custom values."""
    choice = st.radio(t("Preprocessing"), ["auto", *PRESETS], horizontal=True, key="pre_choice",
                      format_func=lambda c: t("auto") if c == "auto" else c,
                      help=t("auto: the architecture's own (timm's config for timm models), else ImageNet's for RGB "
                             "inputs. imagenet: resize 256, centre crop 224, ImageNet mean/std. tf: mean = std = 0.5. "
                             "custom: the values below."))
    overrides = {}
    if choice == "custom":
        c = st.columns(5)
        overrides = {"mean": parse_floats(c[0].text_input(t("Mean"), "0.5,0.5,0.5", key="pre_mean")),
                     "std": parse_floats(c[1].text_input(t("Std"), "0.5,0.5,0.5", key="pre_std")),
                     "resize": int(c[2].number_input(t("Resize (short side)"), 1, 2048, 256, key="pre_resize")),
                     "crop": int(c[3].number_input(t("Centre crop"), 1, 2048, 224, key="pre_crop")),
                     "interpolation": c[4].selectbox(t("Interpolation"), ["bilinear", "bicubic", "nearest"],
                                                     key="pre_interpolation")}
    return (None if choice == "auto" else choice), overrides


def _pressed_or_pending(clicked: bool, upload, key: str) -> bool:
    """Whether to use the uploaded file in this run: its button was pressed now, or pressed earlier while the file had
    not reached the server yet (the press is remembered under `key`) and now it has. A press usually lands mid-upload
    when the user presses as soon as the file's name shows: the name shows while the file still uploads."""
    pending = st.session_state.pop(key, False)
    if upload is not None:
        return clicked or pending
    if clicked or pending:
        st.session_state[key] = True
        st.warning(t("No file has reached the server yet. It is used as soon as its upload finishes; if none is "
                     "uploading, choose one above."))
    return False


with tab_model:
    st.caption(t("A torch.export program (.pt2, dynamic batch), an ONNX file (.onnx, converted with onnx2torch), or a "
                 "state_dict (.pt/.pth/.bin/.safetensors) for a registry or timm architecture. Every convolution and "
                 "linear layer is quantized for real; TorchScript is refused (its layers cannot be seen into). "
                 "Files load with weights_only=True (a .pt2 too): pickles that would run code are refused."))
    f = st.file_uploader(t("Model file"), type=UPLOAD_TYPES, key="model_upload")
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox(t("Architecture (for a state_dict)"), ["(none)", *BUILTIN, *TORCHVISION, "timm ..."],
                        key="upload_arch", format_func=lambda a: t("(none)") if a == "(none)" else a)
    timm_arch = c2.selectbox(t("timm architecture"), timm_names(), index=None, placeholder=t("type to search"),
                             disabled=arch != "timm ...", key="upload_timm_arch")
    shape_text = c3.text_input(t("Input shape C,H,W (.pt2/.onnx)"), value="", placeholder="3,224,224",
                               key="upload_shape",
                               help=t("Blank: read from the file, where its export fixed C, H and W (the batch may "
                                      "stay dynamic). Needed only when the file leaves them open."))
    with user_errors():
        preset_name, overrides = _preprocess_widgets()
    # never disabled: a click sends every widget's value, the uploader's too; with no file on the server yet (still
    # uploading, or none chosen) the press is remembered and the file loads in the run its upload ends with
    if _pressed_or_pending(st.button(t("Load model")), f, "load_on_arrival"):
        path = upload_dir() / f.name
        path.write_bytes(f.getvalue())
        chosen = f"timm:{timm_arch}" if arch == "timm ..." and timm_arch else (None if arch in ("(none)", "timm ...") else arch)
        try:
            with st.spinner(t("Loading and checking {file} ...").format(file=f.name)):
                user = load_user_model(path, arch=chosen, input_shape=parse_shape(shape_text), name=f"user:{f.name}",
                                       preprocess=preset_name, preprocess_overrides=overrides or None)
        except USER_ERRORS as exc:
            st.error(str(exc))
        else:
            user_models()[user.name] = user
            st.session_state["pending_model"] = user.name
            st.success(t("Loaded {model}: {params} parameters, {classes} classes.").format(
                model=user.name, params=f"{user.params:,}", classes=len(user.spec.class_names)))
            st.rerun()

with tab_data:
    st.caption(t("A .zip with one folder per class (cat/1.jpg, dog/2.png, ...), or plain images with no folders "
                 "(scored by agreement with FP32). ImageNet synset folder names (n01440764, ...) map to ImageNet "
                 "classes. Images of any size go through the model's preprocessing."))
    z = st.file_uploader(t("Dataset archive"), type=["zip"], key="data_upload")
    if _pressed_or_pending(st.button(t("Use this dataset")), z, "use_data_on_arrival"):  # as Load model
        archive = upload_dir() / z.name
        archive.write_bytes(z.getvalue())
        try:
            root = extract_image_archive(archive, upload_dir() / f"{Path(z.name).stem}-{uuid.uuid4().hex[:6]}")
            cached_eval_set(f"imagefolder:{root}", 1, 0, decode_for(loaded))  # decode now: bad archives fail here
        except USER_ERRORS as exc:
            st.error(str(exc))
        else:
            st.session_state["pending_data"] = f"imagefolder:{root}"
            st.rerun()

with tab_images:
    files = st.file_uploader(t("Image files"), type=["png", "jpg", "jpeg", "bmp", "webp"], accept_multiple_files=True,
                             key="image_upload")
    if files:
        c = st.columns(4)
        for i, file in enumerate(files[:16]):
            try:
                x = load_image_tensor(file, spec.input_shape, spec.preprocess)
            except ValueError as exc:
                c[i % 4].error(str(exc))
                continue
            with c[i % 4]:
                st.image(display_array(x[0]), caption=file.name, width=140)
                for name, p in top_classes(loaded, x, k=5):
                    st.caption(f"{name}: {p:.1%}")
        if spec.input_shape[0] == 1:
            st.caption(t("Built-in models expect Fashion-MNIST-like pictures: a light garment on a black background."))
