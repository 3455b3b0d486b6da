"""Where the project's config groups live: ``conf/`` beside the ``labkit`` package (one place for every caller)."""
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
