"""Quantization Explorer's engine. Never imports streamlit."""
