"""Training: the built-in models' training and quantization-aware fine-tuning (QAT). Imports every
engine layer below it (quant, zoo, analysis, runtime)."""
