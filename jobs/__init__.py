"""Jobs: plain Python functions `train(cfg, ctx)` that never import Ray or MLflow."""
