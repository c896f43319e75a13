"""Where the Hydra configs live, and what each group offers.

``configs/`` sits at the top of the repository; a wheel installs it as ``ttabench/configs``
(see ``[tool.setuptools]`` in pyproject.toml). The folder of a group *is* its registry: adding
``configs/method/foo.yaml`` adds ``method=foo``.
"""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The configs folder of an installed wheel, else of the source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "run.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"ttabench configs not found next to {package}")


def list_groups() -> dict[str, list[str]]:
    """Config group -> sorted option names (the YAML files of the group folder)."""
    root = config_dir()
    return {
        group.name: sorted(p.stem for p in group.glob("*.yaml"))
        for group in sorted(root.iterdir())
        if group.is_dir() and any(group.glob("*.yaml"))
    }
