"""The only place labkit uses names that other libraries keep private (``_name``): one small module per library.

Everywhere else labkit uses public APIs only. Where a library offers none for what labkit needs, the private name is
used here, in one documented function that says why and what it relies on:

- :mod:`labkit.adapters.lightning`: a CSV logger that continues ``metrics.csv``, the MLflow and W&B loggers' clients
  and start-up arguments (``pytorch-lightning``);
- :mod:`labkit.adapters.hydra`: Hydra's own error report, a failed job's exception, the file Hydra was writing when
  it failed (``hydra-core``);
- :mod:`labkit.adapters.optuna`: another worker's trial, addressed in the study's storage (``optuna``);
- :mod:`labkit.adapters.wandb`: the W&B server address W&B itself would use (``wandb``);
- :mod:`labkit.adapters.torch`: the network inside a ``torch.compile`` wrapper, a scheduler's last learning rates
  (``torch``);
- :mod:`labkit.adapters.numpy`: numpy >= 2's home of the globals old array pickles name (``numpy``).

``tests/test_adapters.py`` exercises every function on a small real object and fails naming the library and its
installed version when a release renames or reshapes what it relies on; its
``test_no_private_third_party_names_outside_adapters`` keeps the rest of labkit on public APIs. Each library named
here gets an upper bound in pyproject.toml: a new major release is tested before labkit allows it.

The bottom layer (below ``labkit.core``): it imports nothing from labkit, and no library when it is imported (each
function imports what it needs), so torch-free modules such as the pre-flight may use it.
"""
