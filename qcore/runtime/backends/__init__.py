"""Real INT8 models built from a calibrated QuantSim: ONNX Runtime (QDQ) and PyTorch x86 (torch.ao).

Both backends take their ranges from the QuantSim, i.e. from the user's calibration method and
config, never from a calibration of their own; layers the config keeps in float stay float.
"""

from qcore.runtime.backends.common import Runner

__all__ = ["Runner"]
