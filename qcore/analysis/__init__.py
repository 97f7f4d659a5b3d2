"""Experiments on the simulation: evaluation, calibration studies, per-layer sensitivity, and the
numbers the Learn page teaches with. Imports qcore.quant and qcore.zoo."""
