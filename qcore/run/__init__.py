"""How a server shares its cores: background jobs, the job queue (scheduler), the job log kept in the history
file, and where jobs run (this process, Ray). Imports qcore.quant, qcore.zoo and qcore.store (the history
file the job log lives in); the pages and the bench drive it."""
