"""One trial, as a Ray worker runs it: overrides -> Hydra -> the user's job (trainable), the `ctx` the job reports
to (ctx), its memory limit, a @hydra.main app as a job (hydra_app), why a trial failed and whether it is tried
again (retries), and its names (t003).

Imports: api, errors, ray_internals, config, storage. Never the driver's wings (launch, run) nor MLflow."""
