"""labkit's Optuna sweeper for Hydra 1.3 (``hydra/sweeper=labkit_optuna``, chosen by ``hparams_search=optuna``)."""
