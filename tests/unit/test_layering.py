"""The layout shows the flow, and the code keeps to it: each layer imports only those below it,
other libraries' internals stay in the one package that owns them, nothing asks a source what it
can do."""

import ast
import subprocess
import sys
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


# The one package allowed to use names another library keeps private (each use there tested and
# bounded in pyproject.toml), and the names with an underscore that are public all the same.
INTERNALS = "internals"
DOCUMENTED = {"_exit"}  # os._exit


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_private_names() -> set[str]:
    """The private names the proxy defines itself: functions, classes, assigned names and
    attributes, import aliases. A `._name` that is none of them is another library's."""
    names = set()
    for path in PROXY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # __slots__ entries
    return {name for name in names if _private(name)}


def _private_uses(tree: ast.AST, own: set[str]) -> list[tuple[int, str]]:
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "gitlab_pypi_proxy":
                continue
            if any(_private(part) for part in node.module.split(".")):
                uses.append((node.lineno, f"from {node.module} import"))
            uses += [(node.lineno, f"import {a.name}") for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(part) for part in alias.name.split(".")):
                    uses.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if node.attr not in own and node.attr not in DOCUMENTED:
                uses.append((node.lineno, ast.unparse(node)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and node.args[1].value not in own
        ):
            uses.append((node.lineno, ast.unparse(node)))
    return uses


def test_no_module_outside_internals_uses_another_librarys_private_names() -> None:
    """anyio's StreamProtocol, httpx2's `_pool` and `_utils`, starlette's `_utils`, diskcache's
    `_sql` were each used from the module that needed them; every such use now lives in
    gitlab_pypi_proxy/internals/, or has given way to the public API."""
    own = _own_private_names()
    found = [
        f"{path.relative_to(PROXY)}:{line}: {what}"
        for path in sorted(PROXY.rglob("*.py"))
        if path.relative_to(PROXY).parts[0] != INTERNALS
        for line, what in _private_uses(ast.parse(path.read_text()), own)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("code", "found"),
    [
        ("from starlette._utils import get_route_path", "from starlette._utils import"),
        ("from anyio._backends import _asyncio", "import _asyncio"),
        ("import anyio._backends._asyncio", "import anyio._backends._asyncio"),
        ("import subprocess\nsubprocess._args_from_interpreter_flags()", "subprocess._args_"),
        ("self.cache._sql('SELECT 1')", "self.cache._sql"),
        ("getattr(transport, '_pool_of_a_library', None)", "getattr(transport"),
    ],
)
def test_the_check_finds_each_kind_of_use(code: str, found: str) -> None:
    uses = _private_uses(ast.parse(code), own={"_pool"})
    assert any(what.startswith(found) for _, what in uses), uses


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
        "internals/server_protocol.py",  # uvicorn's transport, for what it does not hold back
        "log_format.py",  # a log record's request_id, where the filter set one
        "policy/attestations.py",  # an attestation's publisher
        "sources/upstream_transport.py",  # a response body's aclose, where it has one
        "storage/cached_file.py",  # os.RWF_NOWAIT, where the platform has it
        "storage/local_blobs.py",  # an OSError's strerror
        "storage/writable.py",  # an exception's errno
        "supervisor.py",  # socket.SO_REUSEPORT, where the platform has it
    }


WITHOUT_WEB = ("storage", "sources", "index", "policy")


def test_the_layers_below_http_import_nothing_of_starlette() -> None:
    """Failures are plain exceptions (gitlab_pypi_proxy.errors); only http/ renders them."""
    direct = [
        f"{path.relative_to(PROXY)} imports {name}"
        for path in [PROXY / "errors.py", *(p for pkg in WITHOUT_WEB for p in _modules(pkg))]
        for name in _imported(path)
        if name.split(".")[0] == "starlette"
    ]
    assert direct == []
    modules = [
        f"gitlab_pypi_proxy.{pkg}.{path.stem}"
        for pkg in WITHOUT_WEB
        for path in _modules(pkg)
        if path.stem != "__init__"
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'starlette'))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]"


def test_every_kind_of_source_the_configuration_accepts_is_built() -> None:
    from gitlab_pypi_proxy.config import SOURCE_KINDS
    from gitlab_pypi_proxy.services import KINDS

    assert tuple(KINDS) == SOURCE_KINDS
