"""Quantization Explorer's engine. Never imports streamlit.

OpenMP threads (torch's) wait passively here: latency is measured with torch and ONNX Runtime
paths interleaved in one process, and threads spinning after one path's run would steal the
cores from the next. This must be set before torch loads its OpenMP runtime.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
