"""The morning after: `danlu compare` (a paired-seed A/B test, run as two sweeps) and `danlu rerun` (a trial run
again here and checked against its MLflow run). The report itself is a plug-in package (orchestrator/report/).

Imports: run, launch, trial, report, tracking, config, stats. Only cli above."""
