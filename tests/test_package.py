"""The package as it is installed: one version everywhere."""


def test_one_version_everywhere():
    from importlib.metadata import version

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from pathlib import Path

    import vit_tutorial

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert version("vit-tutorial") == vit_tutorial.__version__
