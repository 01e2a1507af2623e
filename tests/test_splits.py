"""The split names have one owner; tfvae's modules import each other without a cycle."""

import ast

from tests.conftest import REPO
from tfvae import splits


def _imports() -> dict[str, set[str]]:
    """Returns {module: the tfvae modules it imports}, read from the source.

    Every import counts, also one only for annotations (under TYPE_CHECKING):
    such a pair still cannot be read, or moved, one without the other.
    """
    graph = {}
    for path in (REPO / "tfvae").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "tfvae":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("tfvae."):
                    imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {
                    alias.name.split(".")[1]
                    for alias in node.names
                    if alias.name.startswith("tfvae.")
                }
        graph[path.stem] = imported & {p.stem for p in (REPO / "tfvae").glob("*.py")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Returns an import cycle of `graph` (the first module repeated), or None."""
    done, path = set(), []

    def visit(module):
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            found = visit(imported)
            if found:
                return found
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return None


def test_no_tfvae_module_imports_itself_back():
    assert _cycle(_imports()) is None, " -> ".join(_cycle(_imports()))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_data_and_image_folder_share_the_split_names_of_splits():
    graph = _imports()
    assert "data" not in graph["image_folder"]
    assert "splits" in graph["image_folder"] and "splits" in graph["data"]
    assert (splits.TRAIN_SPLIT, splits.TEST_SPLIT) == ("train", "test")
