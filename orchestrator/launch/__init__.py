"""Before anything runs: a sweep's plan (compose -> space -> every check, nothing launched), its forecast and
`danlu plan`'s view of it (preview), the preflight and its probe, whether the stores and cluster answer (reach),
and the budget's limits.

Imports: config, storage, cluster, trial, tracking, and the plug-in packages (search, scheduler, report). Not run,
remote or review, which build on it."""
