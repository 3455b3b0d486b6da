"""Speed benchmarks of labkit against the lab notes' hand-written loops and the compute floor (``python benchmarks/run.py``)."""
