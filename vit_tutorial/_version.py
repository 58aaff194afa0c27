"""The package version and the project's public home, each in one place.

The package, its checkpoints and pyproject.toml read the version from here. `HOME` is where the project is
published (repository, book, launch buttons, each chapter's install cell): `python tools/sync_links.py`
writes it and the version into every file that names them, and a test fails when one has drifted.
"""

__version__ = "0.4.0"
HOME = "https://github.com/vit-tutorial/vit-tutorial"
