"""labkit: Lightning + Hydra experiments for the deep-learning lab notes."""

__version__ = "0.1.0"
