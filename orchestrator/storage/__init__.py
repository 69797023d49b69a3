"""A sweep's files in its storage, and their faults: the storage as one thing, as the sweep's driver holds it
(sweep_storage), and its parts: the sweep's own records (sweep_files), Tune's snapshots, trial checkpoints, the
one-driver lock, full disks, what a restore finds and must show after (recovery), and the sweeps stored on this
machine (catalog). No Ray, no MLflow.

Imports: errors, tags. Everything above may import it."""
