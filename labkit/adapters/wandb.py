"""Weights & Biases (``wandb``) internals labkit needs. Nothing here imports wandb until a function is called."""
from __future__ import annotations


def base_url() -> str:
    """The W&B server address ``wandb.init`` would use: ``WANDB_BASE_URL``, else the host ``wandb login --host``
    saved in W&B's settings file, else W&B's cloud. Starts no process.

    Why private: W&B resolves its settings (environment, settings files) in ``wandb.sdk.wandb_setup._setup``; the
    public ``wandb.setup()`` does the same but also starts W&B's service process, which a check made before training
    (is the server there?) must not."""
    import inspect

    from wandb.sdk import wandb_setup

    if "start_service" in inspect.signature(wandb_setup._setup).parameters:
        return str(wandb_setup._setup(start_service=False).settings.base_url)
    return saved_base_url()  # an older W&B (0.19), whose _setup starts the service: read what it would read


def saved_base_url() -> str:
    """``WANDB_BASE_URL``, else ``base_url`` in the settings file ``wandb login --host`` writes
    (``$WANDB_CONFIG_DIR/settings``, default ``~/.config/wandb/settings``), else W&B's cloud. Public W&B files and
    variables only, without importing wandb: what the pre-flight asks."""
    import configparser
    import os
    from pathlib import Path

    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    folder = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    parser = configparser.ConfigParser()
    parser.read(folder / "settings")
    return parser.get("default", "base_url", fallback="https://api.wandb.ai")
