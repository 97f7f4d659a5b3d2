"""Quantization itself: grids (qparams), fake quantization, statistics and the histogram kernel,
calibration range methods, configs, BN folding, tracing and the QuantSim that puts them together.
Imports nothing else of qcore."""
