"""The package version, in one place: the package, its checkpoints and pyproject.toml read it from here."""

__version__ = "0.3.0"
