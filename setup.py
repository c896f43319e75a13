"""Package discovery only; everything else is in pyproject.toml.

``find_packages`` cannot see ``ttabench.configs`` because it is mapped from the top-level
``configs/`` folder (package-dir in pyproject.toml), so it is added here by name.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["ttabench", "ttabench.*"]), "ttabench.configs"])
