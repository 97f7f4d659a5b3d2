"""Model page: the chosen model, its FP32 accuracy measured here, its layers, and uploads."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from pages._ui import (USER_ERRORS, cached_eval_set, current_model, data_name_for, fp32_eval, settings, upload_dir,
                       user_errors, user_models)
from qcore.zoo.data import extract_image_archive
from qcore.zoo.images import display_array, load_image_tensor, top_classes
from qcore.zoo.models import BUILTIN, TORCHVISION, layer_table
from qcore.zoo.user_models import load_user_model

s = settings()
st.title("Quantization Explorer")
st.caption("What quantization does to a real vision model, and how to choose how to quantize it.")

with user_errors():
    loaded = current_model()
    data_name = data_name_for(loaded)
    result = fp32_eval(loaded, data_name, s["eval_size"], s["seed"])
    data = cached_eval_set(data_name, s["eval_size"], s["seed"])

spec = loaded.spec
st.subheader(spec.name)
st.write(spec.description)
cols = st.columns(4)
cols[0].metric("FP32 top-1", f"{result.top1:.2%}", help=f"Measured now on {result.n} {data.name} test images")
cols[1].metric("FP32 top-5", f"{result.top5:.2%}")
cols[2].metric("Parameters", f"{loaded.params:,}")
cols[3].metric("MACs per image", f"{loaded.macs / 1e6:.1f} M")
st.caption(
    f"Input {'x'.join(map(str, spec.input_shape))}, {len(spec.class_names)} classes, "
    f"weights: {spec.weight_source}. Accuracy measured on {result.n} images of {data.name} (test split)."
)

st.subheader("Predictions on test images")
n_show = min(12, len(data))
cols = st.columns(6)
for i in range(n_show):
    pred, true = int(result.predictions[i]), int(data.labels[i])
    with cols[i % 6]:
        st.image(display_array(data.images[i]), width=112, clamp=True)
        true_name = data.class_names[true] if true < len(data.class_names) else str(true)
        mark = ":green[**✓**]" if pred == true else ":red[**✗**]"
        st.markdown(f"{mark} **{spec.class_names[pred]}**  \n<small>true: {true_name}</small>", unsafe_allow_html=True)

with st.expander("Architecture: every layer, its output shape, parameters and MACs"):
    rows = layer_table(loaded.module, spec.input_shape)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", height=360)
    else:
        st.info("This model's layers are not visible (TorchScript hides them).")

st.subheader("Your own model or images")
tab_model, tab_data, tab_images = st.tabs(["Upload a model", "Upload a dataset (.zip)", "Classify images"])

with tab_model:
    st.caption("A state_dict for a known architecture (.pt/.pth). Files load with weights_only=True: pickles that "
               "would run code are refused. TorchScript and torch.export (.pt2) files are checked and refused with "
               "the reason while qcore cannot quantize their layers for real (no silent FP32 'INT8').")
    f = st.file_uploader("Model file", type=["pt", "pth", "pt2", "ts", "bin"], key="model_upload")
    c1, c2 = st.columns(2)
    arch = c1.selectbox("Architecture (for a state_dict)", ["(none)", *BUILTIN, *TORCHVISION])
    shape_text = c2.text_input("Input shape C,H,W (.pt2 without an architecture)", value="")
    if st.button("Load model", disabled=f is None):
        path = upload_dir() / f.name
        path.write_bytes(f.getvalue())
        try:
            shape = tuple(int(v) for v in shape_text.replace("x", ",").split(",")) if shape_text.strip() else None
            if shape is not None and len(shape) != 3:
                raise ValueError("the input shape needs three numbers: channels, height, width")
            user = load_user_model(path, arch=None if arch == "(none)" else arch, input_shape=shape,
                                   name=f"user:{f.name}")
        except USER_ERRORS as exc:
            st.error(str(exc))
        else:
            user_models()[user.name] = user
            st.session_state["pending_model"] = user.name
            st.success(f"Loaded {user.name}: {user.params:,} parameters, {len(user.spec.class_names)} classes.")
            st.rerun()

with tab_data:
    st.caption("A .zip with one folder per class (cat/1.jpg, dog/2.png, ...). ImageNet synset folder names "
               "(n01440764, ...) map to ImageNet classes, for evaluating the torchvision models.")
    z = st.file_uploader("Dataset archive", type=["zip"], key="data_upload")
    if st.button("Use this dataset", disabled=z is None):
        archive = upload_dir() / z.name
        archive.write_bytes(z.getvalue())
        try:
            root = extract_image_archive(archive, upload_dir() / f"{Path(z.name).stem}-{uuid.uuid4().hex[:6]}")
            cached_eval_set(f"imagefolder:{root}", 1, 0)  # decode now, so bad archives fail here
        except USER_ERRORS as exc:
            st.error(str(exc))
        else:
            st.session_state["pending_data"] = f"imagefolder:{root}"
            st.rerun()

with tab_images:
    files = st.file_uploader("Images", type=["png", "jpg", "jpeg", "bmp", "webp"], accept_multiple_files=True,
                             key="image_upload")
    if files:
        c = st.columns(4)
        for i, file in enumerate(files[:16]):
            try:
                x = load_image_tensor(file, spec.input_shape)
            except ValueError as exc:
                c[i % 4].error(str(exc))
                continue
            with c[i % 4]:
                st.image(display_array(x[0]), caption=file.name, width=140)
                for name, p in top_classes(loaded, x, k=3):
                    st.caption(f"{name}: {p:.1%}")
        if spec.input_shape[0] == 1:
            st.caption("Built-in models expect Fashion-MNIST-like pictures: a light garment on a black background.")
