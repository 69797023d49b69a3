"""danlu's own config tree (danlu.yaml and its groups), composed behind a project's conf/: see danlu.yaml."""
