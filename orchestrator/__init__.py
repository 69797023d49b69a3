"""danlu (丹炉): Hydra-composed sweeps on Ray Tune with ASHA, tracked in MLflow.

Nothing heavy is imported here: `danlu --help` must stay fast.
"""

__version__ = "0.1.0"
