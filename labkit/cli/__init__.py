"""Entry points: the Hydra app wrapper (app.py), one module per command (train, evaluate, predict, export,
compare) and the notebook API (api.py)."""
