"""What outlives one computation: the run history (SQLite) and background jobs. Imports only
qcore.zoo (for the data directory)."""
