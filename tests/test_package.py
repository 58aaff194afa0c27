"""The package as it is installed and published: one version and one home everywhere, a wheel that carries
everything a chapter reads, and every chapter running alone from that wheel."""

import json
import os
import re
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from sync_links import INCLUDE, INSTALL_TAG, PROSE, book_url, install_cell_source, with_includes  # noqa: E402

from vit_tutorial._version import HOME, __version__  # noqa: E402


def test_one_version_everywhere():
    from importlib.metadata import version

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import vit_tutorial

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in pyproject["project"]["dynamic"]
    assert version("vit-tutorial") == vit_tutorial.__version__


def test_one_home_everywhere_and_every_chapter_installs_this_version():
    """Publishing is one edit of vit_tutorial/_version.py and `python tools/sync_links.py`; nothing drifts."""
    for name in PROSE:
        urls = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", (ROOT / name).read_text()))
        assert urls <= {HOME}, (name, urls)
    assert f"url: {HOME}" in (ROOT / "_config.yml").read_text()
    assert f'Documentation = "{book_url()}"' in (ROOT / "pyproject.toml").read_text()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert INSTALL_TAG in cells[0]["metadata"].get("tags", []), path.name
        assert "".join(cells[0]["source"]) == install_cell_source(__version__), path.name


def test_the_readme_shows_the_shipped_benchmark_tables():
    readme = (ROOT / "README.md").read_text()
    included = [m.group(2) for m in INCLUDE.finditer(readme)]
    assert "vit_tutorial/pretrained/cpu_benchmark.md" in included
    assert with_includes(readme) == readme, "run python tools/sync_links.py"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel as `pip wheel` builds it from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("vit_tutorial-*.whl")
    return path


def test_the_wheel_carries_everything_a_chapter_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "vit_tutorial" / "pretrained").iterdir())
    assets = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "vit_tutorial" / "explorer_assets").iterdir())
    assert "vit_tutorial/pretrained/vit_cifar10.pt" in shipped
    assert any(name.endswith("_benchmark.json") for name in shipped)
    missing = [name for name in shipped + assets if name not in names]
    assert not missing, missing
    sizes = {info.filename: info.file_size for info in zipfile.ZipFile(wheel).infolist()}
    assert sum(sizes.values()) < 15_000_000  # a checkpoint, records and code: no data set, no stray files


def _declared_dependencies() -> list[str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def _share_torch(python: Path, folder: Path) -> None:
    """Let the environment of `python` see this one's PyTorch (several GB, minutes to install) and what it needs,
    and nothing else: links to those distributions in `folder`, put on its path. Its pip then finds the
    declared `torch` and `torchvision` requirements met, as on a machine that had them installed."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, tuple[metadata.Distribution, set[str]]] = {}
    wanted = [Requirement(r) for r in _declared_dependencies() if Requirement(r).name in ("torch", "torchvision")]
    while wanted:
        requirement = wanted.pop()
        name, extras = canonicalize_name(requirement.name), set(requirement.extras)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        if name in found and extras <= found[name][1]:
            continue
        extras |= found[name][1] if name in found else set()
        found[name] = (distribution, extras)
        for text in distribution.requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras or {""}):
                wanted.append(needed)
    folder.mkdir()
    for distribution, _ in found.values():
        for top in {Path(str(f)).parts[0] for f in distribution.files or []} - {"..", "__pycache__"}:
            source = Path(str(distribution.locate_file(top)))
            if source.exists() and not top.endswith(".pth") and not (folder / top).exists():
                (folder / top).symlink_to(source)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "shared-torch.pth").write_text(f"{folder}\n")


@pytest.mark.slow
def test_every_chapter_runs_alone_from_the_wheel(wheel, tmp_path, capsys):
    """Each chapter copied alone into an empty folder, in a new environment with only the notebook runner and
    the package's declared dependencies: its first cell installs the package from the wheel (as it would from
    PyPI), and it runs in quick mode on the image-folder copy of CIFAR-10."""
    data = os.environ.get("VIT_TUTORIAL_DATA")
    if not data or not (Path(data) / "test").is_dir():
        pytest.skip("no CIFAR-10 image folder configured (VIT_TUTORIAL_DATA); .ci/run sets one")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    _share_torch(python, tmp_path / "shared")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "nbclient", "nbformat", "ipykernel", *_declared_dependencies()],
        capture_output=True,
        text=True,
        check=False,
    )
    if installed.returncode != 0:
        if "Could not find a version" in installed.stderr or "No matching distribution" in installed.stderr:
            pytest.skip(f"no package registry within reach: {installed.stderr.strip().splitlines()[-1]}")
        raise AssertionError(installed.stderr[-3000:])
    runner = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "notebook = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(notebook, timeout=1800, kernel_name='python3').execute()\n"
        "nbformat.write(notebook, sys.argv[1])\n"
    )
    env = {
        **os.environ,
        "VIT_TUTORIAL_QUICK": "1",
        "VIT_TUTORIAL_DATA": data,
        "VIT_TUTORIAL_CACHE": str(tmp_path / "cache"),
        "VIT_TUTORIAL_RUNS": str(tmp_path / "runs"),
        "PIP_FIND_LINKS": str(wheel.parent),  # the install cell finds the wheel where it would look on PyPI
        "PATH": f"{environment / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)
    timings = {}
    for chapter in sorted((ROOT / "notebooks").glob("*.ipynb")):
        alone = tmp_path / chapter.stem
        alone.mkdir()
        copy = alone / chapter.name
        copy.write_bytes(chapter.read_bytes())
        started = time.perf_counter()
        result = subprocess.run(
            [python, "-c", runner, str(copy)], cwd=alone, env=env, capture_output=True, text=True, check=False
        )
        timings[chapter.stem] = time.perf_counter() - started
        assert result.returncode == 0, (chapter.name, result.stderr[-3000:])
        first = json.loads(copy.read_text())["cells"]
        outputs = next(c for c in first if c["cell_type"] == "code")["outputs"]
        said = "".join("".join(o.get("text", "")) for o in outputs)  # nbformat stores text as a list of lines
        if chapter.stem.startswith("01"):
            assert f"installed vit-tutorial {__version__}" in said  # the first chapter found no package
    with capsys.disabled():
        print("\nchapters alone, quick mode: " + ", ".join(f"{k[:2]} {v:.0f} s" for k, v in timings.items()))


def test_the_package_has_no_import_cycle():
    """Modules import only from floors below them, imports inside functions included (the command line's late
    imports too): a module never needs one that needs it."""
    import ast

    graph: dict[str, set[str]] = {}
    for path in (ROOT / "vit_tutorial").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        graph[path.stem] = imported - {path.stem}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in graph.get(start, ()):
            if module == target or (module not in seen and reaches(module, target, seen | {module})):
                return True
        return False

    assert [module for module in graph if reaches(module, module, set())] == []
