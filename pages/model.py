"""Model page: the chosen model, its FP32 accuracy measured here, and predictions on test images."""

import streamlit as st

from pages._ui import cached_eval_set, cached_model, data_name_for, fp32_eval, settings, user_errors

s = settings()
st.title("Quantization Explorer")
st.caption("What quantization does to a real vision model, and how to choose how to quantize it.")

with user_errors():
    loaded = cached_model(s["model"])
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
    img = data.images[i]
    pred, true = int(result.predictions[i]), int(data.labels[i])
    ok = pred == true
    picture = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
    with cols[i % 6]:
        st.image(picture, width=112, clamp=True)
        st.markdown(
            f"{'✅' if ok else '❌'} **{spec.class_names[pred]}**  \n"
            f"<small>true: {data.class_names[true] if true < len(data.class_names) else true}</small>",
            unsafe_allow_html=True,
        )
