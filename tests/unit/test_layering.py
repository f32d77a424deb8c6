"""The layout shows the flow, and the code keeps to it: each layer imports only those below it, a
library's internals stay in the one module that owns them, nothing asks a source what it can do."""

import ast
from pathlib import Path

import pytest

PROXY = Path(__file__).resolve().parents[2] / "gitlab_pypi_proxy"

# package → the packages of the proxy it must not import (the layers above it)
ABOVE = {
    "storage": (
        "gitlab_pypi_proxy.sources",
        "gitlab_pypi_proxy.index",
        "gitlab_pypi_proxy.http",
        "gitlab_pypi_proxy.offline",
        "gitlab_pypi_proxy.services",
    ),
    "sources": (
        "gitlab_pypi_proxy.index",
        "gitlab_pypi_proxy.http",
        "gitlab_pypi_proxy.offline",
        "gitlab_pypi_proxy.services",
    ),
    "index": ("gitlab_pypi_proxy.http", "gitlab_pypi_proxy.offline", "gitlab_pypi_proxy.services"),
    "http": ("gitlab_pypi_proxy.offline",),
    "offline": ("gitlab_pypi_proxy.http",),
}


def _modules(package: str) -> list[Path]:
    return sorted((PROXY / package).glob("*.py"))


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("package", sorted(ABOVE))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    wrong = [
        f"{path.name} imports {name}"
        for path in _modules(package)
        for name in _imported(path)
        if name.startswith(ABOVE[package])
    ]
    assert wrong == []


def _attribute_uses(attribute: str) -> list[str]:
    """Every `<object>.<attribute>` in the proxy, but `self.<attribute>`, as file:line."""
    found = []
    for path in sorted(PROXY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == attribute
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                found.append(f"{path.relative_to(PROXY)}:{node.lineno}")
    return found


def test_diskcaches_internals_are_used_in_the_file_index_only() -> None:
    """`cache stats` once queried diskcache's private `_sql` itself."""
    assert {use.split(":")[0] for use in _attribute_uses("_sql")} == {"storage/file_index.py"}


def test_the_config_readers_own_helpers_stay_its_own() -> None:
    """The sources' table once read `yanked` with the reader's private `_get`."""
    assert _attribute_uses("_get") == []


def test_nothing_asks_a_source_what_it_can_do() -> None:
    """Capabilities are handed out typed by the services; no hasattr, and getattr only on
    things that are no source (a route's endpoint, an exception, a library's internals)."""
    calls = []
    for path in sorted(PROXY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("hasattr", "getattr")
            ):
                calls.append((path.relative_to(PROXY).as_posix(), ast.unparse(node.args[0])))
    assert not [c for c in calls if c[1].startswith(("source", "parts", "s.", "p."))]
    assert {name for name, _ in calls} <= {
        "cli.py",  # argparse namespaces
        "http/access_log.py",  # the route's endpoint
        "http/coalesced_writes.py",  # uvicorn's transport, for what it does not hold back
        "model.py",  # a record's own fields, pickled (what earlier versions wrote reads too)
        "policy/provenance.py",  # an attestation's publisher (issue 16's groundwork, on main)
        "sources/upstream_transport.py",  # a response body's aclose, where it has one
        "storage/cached_file.py",  # os.RWF_NOWAIT, where the platform has it
        "storage/local_blobs.py",  # an OSError's strerror
        "storage/writable.py",  # an exception's errno
    }
