"""Where labkit's config groups live (one place for every caller): ``labkit/conf/`` inside an installed package
(``pip install .`` ships the checkout's ``conf/`` there as package data, setup.py), else ``conf/`` beside the
``labkit`` package in a source checkout (``python train.py``, ``pip install -e .``)."""
from pathlib import Path

PACKAGED_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CHECKOUT_CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
CONF_DIR = PACKAGED_CONF_DIR if (PACKAGED_CONF_DIR / "train.yaml").is_file() else CHECKOUT_CONF_DIR
