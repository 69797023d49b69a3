"""Where the trials run: an embedded Ray or a cluster's address, and whether a trial fits its nodes (placement);
a cluster's dashboard read from a login node: whether it answers, its token, its nodes (dashboard); the Slurm
allocations a sweep ran in (slurm).

Imports: errors, tags, ray_internals, config, storage. A sweep's driver joins Ray through placement. The Jobs API
client is remote's (orchestrator/remote/cluster_client.py): nothing on a sweep's path imports it."""
