"""Real INT8 on this CPU: machine facts, latency measurement, the backends (ONNX Runtime, torch x86),
deploy and its diagnosis. Imports qcore.quant, qcore.zoo and qcore.analysis."""
