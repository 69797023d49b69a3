"""danlu's Hydra sweeper plugin, installed as hydra_plugins.danlu_sweeper (pyproject.toml maps this folder there):
`python train.py -m hydra/sweeper=danlu hydra.sweeper.metric=val_acc ...`. See danlu_sweeper.py."""
