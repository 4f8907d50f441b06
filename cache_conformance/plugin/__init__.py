"""The pytest plugin every suite runs under: options, the run's checkpoint and targets, the fixtures, expectations
applied and results written (loaded by the root conftest.py)."""
