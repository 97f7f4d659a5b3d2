"""What outlives one computation, and how a server shares its cores: the run history and the job log
(SQLite), background jobs, the job queue (scheduler) and where jobs run (this process, Ray). Imports only
qcore.quant and qcore.zoo (the data directory, a model's identity)."""
