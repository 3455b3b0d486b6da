"""Old name of :mod:`labkit.models.shape`, kept for the modules and scripts that still import it."""
from labkit.models.shape import count_parameters, feature_shape  # noqa: F401
