"""Weights & Biases (``wandb``) internals labkit needs. Nothing here imports wandb until a function is called."""
from __future__ import annotations


def base_url() -> str:
    """The W&B server address ``wandb.init`` would use: ``WANDB_BASE_URL``, else the host ``wandb login --host``
    saved in W&B's settings file, else W&B's cloud. Starts no process.

    Why private: W&B resolves its settings (environment, settings files) in ``wandb.sdk.wandb_setup._setup``; the
    public ``wandb.setup()`` does the same but also starts W&B's service process, which a check made before training
    (is the server there?) must not."""
    from wandb.sdk import wandb_setup

    return str(wandb_setup._setup(start_service=False).settings.base_url)
