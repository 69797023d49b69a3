"""A sweep on a Ray cluster from a login node: the one client of the cluster's Jobs API (cluster_client), `danlu
submit`, `status`, `logs`, `stop`, `list --address` (submit), and the supervisor that resubmits a dead driver
(supervise).

Imports: launch (the plan is made here, before submitting), cluster, config. Only cli above."""
