"""The README's "Use from Python" example, run exactly as written.

Its first block trains, evaluates and exports from the repository's root,
where `../shared/datasets/mnist` holds the original MNIST files; the test
runs it in a fresh folder laid out the same way (a `../shared` beside it).
Its second block loads the export in a process where `import tfvae` fails.
"""

import os
import re
import sys

import pytest

from tests.conftest import MNIST_MANUAL_DIR, REPO, requires_mnist, run_command

SECTION = "## Use from Python"


def _python_blocks() -> list[str]:
    """Returns the ```python blocks of the README's "Use from Python" section."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_section_has_the_training_and_the_loading_block():
    blocks = _python_blocks()
    assert len(blocks) == 2
    assert "tfvae.export_model" in blocks[0]
    assert "tfvae" not in blocks[1]


@requires_mnist
@pytest.mark.slow
def test_the_use_from_python_example_runs_as_written(tmp_path):
    training, loading = _python_blocks()
    # The example's root, with ../shared/datasets/mnist beside it.
    root = tmp_path / "repo"
    root.mkdir()
    datasets = tmp_path / "shared" / "datasets"
    datasets.mkdir(parents=True)
    os.symlink(MNIST_MANUAL_DIR, datasets / "mnist")
    (root / "example.py").write_text(training)
    # Without tfvae: an import of it fails, so the block cannot use it.
    (root / "load.py").write_text("import sys\nsys.modules['tfvae'] = None\n" + loading)

    trained = run_command([sys.executable, "example.py"], timeout=600, cwd=root)
    assert trained.returncode == 0, trained.stderr[-3000:]
    bound = re.search(r"IWAE bound, k=100: ([\d.]+) nats", trained.stdout)
    assert bound, trained.stdout
    # Two epochs of a 784-256-16 MLP: well below an untrained model's ~540.
    assert 80 < float(bound.group(1)) < 130
    assert trained.stdout.strip().endswith(os.path.join("export", "my_vae", "1"))

    loaded = run_command([sys.executable, "load.py"], timeout=300, cwd=root)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "(8, 28, 28, 1)"


WINE = REPO.parent / "shared" / "datasets" / "tabular" / "wine.csv"


@pytest.mark.skipif(not WINE.exists(), reason="needs ../shared/datasets/tabular")
@pytest.mark.slow
def test_the_tables_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Tables")
    section = readme[start : readme.index("\n## ", start + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    os.symlink(WINE.parent, tmp_path / "shared" / "datasets" / "tabular")
    (root / "example.py").write_text(block)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = run_command([sys.executable, "example.py"], timeout=600, cwd=root, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    figure = {
        name: re.search(pattern, ran.stdout)
        for name, pattern in (
            ("nll", r"test NLL \(IWAE, k=1000\): ([\d.]+) nats"),
            ("independent", r"independent columns: ([\d.]+) nats"),
            ("impute", r"imputed real cells: error (-?\d+)% below"),
        )
    }
    assert all(figure.values()), ran.stdout
    nll, independent, impute = (float(f.group(1)) for f in figure.values())
    # The README's 20.8 against 24.4, and 33%: the issue asks for 20%.
    assert 19.5 < nll < 22.0 and nll < independent - 2.0
    assert impute >= 20
