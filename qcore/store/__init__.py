"""What outlives one computation: the run history (SQLite). Imports only qcore.quant and qcore.zoo (the data
directory, a model's identity)."""
