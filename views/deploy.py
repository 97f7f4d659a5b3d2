"""Deploy page: build real INT8 models from the current config, measure them against FP32, export."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pandas as pd
import streamlit as st

from views._jobs import job_result, run_job
from views._language import t
from views._settings import KEPT, base_config, chosen_config, scheme_note
from views._ui import layer_summary, page_header
from qcore.quant.calibration import DEFAULT_METHODS
from qcore.figures import latency_figure, speedup_figure

JOB_KEY = "deploy_job"
s, loaded = page_header(
    t("Deploy: real INT8 on this CPU"),
    t("Converts the calibrated model with the ranges of the method you choose into real INT8 models "
      "(ONNX Runtime QDQ; PyTorch with the x86 and the oneDNN engine), checks them against the simulation, and times every path "
      "interleaved in one process."),
)
st.info(scheme_note() + " " + t("Change it with **Weight range** in the sidebar."))
with st.form("deploy_form"):
    c1, c2, c3, c4 = st.columns(4)
    backend = c1.selectbox(t("Backend"), ["auto", "ort", "x86"], key="deploy_backend", **KEPT,
                           format_func=lambda b: t("auto") if b == "auto" else b,
                           help=t("auto builds both and picks the fastest"))
    method = c2.selectbox(t("Calibration method"), list(DEFAULT_METHODS), key="deploy_method", **KEPT)
    batch = c3.number_input(t("Larger batch"), min_value=2, max_value=512, value=32, key="deploy_batch", **KEPT)
    iters = c4.number_input(t("Timed calls per path"), min_value=5, max_value=500, value=30, key="deploy_iters", **KEPT,
                            help=t("Interleaved with the other paths, in bursts whose first call is not timed"))
    config_file = c1.file_uploader(t("Config JSON (optional)"), type=["json"], key="deploy_config_file",
                                   help=t("A QuantConfig exported from the sensitivity page or written by hand"))
    start = st.form_submit_button(t("Build and measure"), type="primary")

if start:
    try:
        config = chosen_config(config_file, base_config().with_default(act_method=method))
    except (ValueError, UnicodeDecodeError) as exc:
        st.error(t("The config file is not valid: {reason}").format(reason=exc))
        st.stop()
    from qcore.runtime.deploy import deploy

    out_dir = Path("out") / "deploy" / st.session_state.setdefault("run_dir", uuid.uuid4().hex[:8])
    run_job(JOB_KEY, "deploy", deploy, remember=True, exclusive=True,
            model=loaded, config=config, backend=backend, out_dir=out_dir, data=s["data"] or None,
            calib_size=int(s["calib_size"]), eval_size=int(s["eval_size"]), seed=int(s["seed"]),
            batch_sizes=(1, int(batch)), iters=int(iters))

r = job_result(JOB_KEY, t("Choose a method and press **Build and measure**."))
if r is not None:
    cols = st.columns(5)
    pct = lambda x: t("n/a") if x is None else f"{x:.2%}"  # noqa: E731
    cols[0].metric(t("FP32 top-1"), pct(r.fp32_accuracy))
    cols[1].metric(t("Simulation top-1"), pct(r.simulation_accuracy))
    cols[2].metric(t("INT8 top-1 ({backend})").format(backend=r.backend), pct(r.int8_accuracy))
    cols[3].metric(t("Agreement with simulation"), pct(r.agreement_with_simulation))
    cols[4].metric(t("Speedup at batch 1"), f"{r.speedup_vs_fastest_fp32:.2f}x",
                   help=t("{backend} vs the fastest FP32 path ({fastest})").format(backend=r.backend,
                                                                                   fastest=r.fastest_fp32))
    layer_summary(r)
    kinds = {n: p.kind for n, p in r.paths.items()}
    batch_name = lambda b: t("batch {n}").format(n=b.removeprefix("batch_"))  # noqa: E731  ("batch_1" -> "batch 1")
    rows = [{t("path"): name, t("kind"): p.kind, t("top-1"): p.accuracy, t("agreement with sim"): p.agreement_with_simulation,
             t("logit SQNR vs sim (dB)"): p.sqnr_db_vs_simulation, t("size (KB)"): round(p.size_bytes / 1024, 1),
             **{t("{batch} median ms").format(batch=batch_name(b)): r.latency_ms[b].get(name, {}).get("median_ms")
                for b in r.latency_ms}}  # variants are timed at the first batch size only
            for name, p in r.paths.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    for b, lat in r.latency_ms.items():
        title = t("Latency, {batch} ({threads} threads)").format(batch=batch_name(b), threads=r.threads)
        st.plotly_chart(latency_figure(lat, kinds, title, x_title=t("milliseconds (median, whiskers p10-p90)")),
                        key=f"lat_{b}")
    st.plotly_chart(speedup_figure(r.speedup_by_path, kinds, r.fastest_fp32, y_title=t("speedup vs fastest FP32"),
                                   baseline_label=t("fastest FP32 ({baseline})")), key="speedup")
    st.subheader(t("Diagnosis"))
    for line in r.diagnosis or [t("Nothing to explain: INT8 is clearly faster here.")]:
        st.markdown(f"- {line}")
    m = r.machine
    st.markdown(t("**INT8 scheme on this CPU ({cpu})**: {scheme}.").format(cpu=m['cpu_class'], scheme=r.int8_scheme))
    st.caption(f"CPU: {m['cpu']} | AVX2 {m['avx2']} | AVX-512 {m['avx512']} | AVX512-VNNI {m['avx512_vnni']} | "
               f"AVX-VNNI {m['avx_vnni']} | AMX {m['amx']} (CPUID) | torch {m['torch_capability']}, "
               + t("quantized engine {engine}").format(engine=m['quantized_engine'])
               + f" | ONNX Runtime {m['onnxruntime']} | " + t("activations reduce_range {value}").format(value=m['reduce_range']))
    with st.expander(t("What stays in float, and the quantize/dequantize transitions")):
        for name, info in r.int8_paths.items():
            st.markdown(t("**{path}**: {n} quantize/dequantize ops; float: {ops}").format(
                path=name, n=info.transitions, ops=", ".join(info.float_ops) or t("nothing")))
            for note in info.notes:
                st.caption(note)
        for note in r.notes:
            st.caption(note)
    st.subheader(t("Export"))
    out_dir = Path(r.out_dir) if r.out_dir else None
    dl = st.columns(3)
    for col, fname, mime in zip(dl, ["model_int8.onnx", "model_int8_x86.pt", "report.json"],
                                ["application/octet-stream", "application/octet-stream", "application/json"]):
        path = out_dir / fname if out_dir else None
        if path is not None and path.is_file():
            col.download_button(t("Download {file}").format(file=fname), path.read_bytes(), file_name=fname, mime=mime)
    with st.expander("report.json"):
        st.code(json.dumps({k: v for k, v in r.to_dict().items() if k != "paths"}, indent=2)[:20000], language="json")
