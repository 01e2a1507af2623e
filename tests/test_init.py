"""The package's top: its public names, and modules a newcomer can read."""

import inspect
import subprocess
import sys

import pytest

import tfvae
from tests.conftest import REPO

# A module holds one concept; past this it holds two.
MAX_MODULE_LINES = 400


@pytest.mark.parametrize("name", tfvae.__all__)
def test_each_public_name_resolves_to_its_owner_and_documents_itself(name):
    value = getattr(tfvae, name)
    module, attribute = tfvae._PUBLIC[name]
    assert value is getattr(sys.modules[module], attribute)
    assert "Example" in value.__doc__, f"{name} has no example"
    arguments = [
        p
        for p in inspect.signature(value).parameters.values()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]
    assert "Args:" in value.__doc__ or not arguments, f"{name} lists no Args:"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'evaluate_vae'"):
        tfvae.evaluate_vae  # noqa: B018


def test_importing_the_package_loads_no_submodule():
    # The command line imports tfvae first: it must stay light (no
    # matplotlib, no evaluation) until a public name is used.
    code = "import sys, tfvae; print(sorted(m for m in sys.modules if 'tfvae.' in m))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO
    )
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


@pytest.mark.parametrize("path", sorted((REPO / "tfvae").glob("*.py")), ids=str)
def test_no_module_runs_past_the_size_of_one_concept(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines"
