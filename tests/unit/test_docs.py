"""The documentation stays true to the code: every configuration key the code accepts is in the
configuration reference (and nothing else is), the README stays short, its links resolve, its
client settings are the status page's, its test command is the one CI runs, and no page carries
development history. The keys are read from the code's own syntax tree (the sets each table's
`check_keys` is given), so a key added to the code without a line in the reference fails here.
`mkdocs build --strict` in .ci/run checks the site's own links and anchors.
"""

import ast
import re
from pathlib import Path

from gitlab_pypi_proxy.http.status_page import Usage, snippets

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"

# Which table each `check_keys` call checks: (function in config.py, the reader it is called on).
TABLE_OF = {
    ("_server", "r"): "[server]",
    ("_cache", "r"): "[cache]",
    ("_gitlab", "r"): "[gitlab]",
    ("_storage", "r"): "[storage]",
    ("_cluster", "r"): "[cluster]",
    ("_source", "r"): "[[sources]]",
    ("_user", "r"): "[[users]]",
    ("_view", "r"): "[[views]]",
    ("load", "auth_r"): "[auth]",
    ("load", "upload_r"): "[upload]",
    ("load", "root"): "top level",
}
# The key sets of gitlab_pypi_proxy/policy/rules.py, by table.
RULES_TABLES = {"_POLICY_KEYS": "[policy]", "_AUDIT_KEYS": "[audit]"}


def _module(name: str) -> ast.Module:
    return ast.parse((ROOT / "gitlab_pypi_proxy" / name).read_text(encoding="utf-8"))


def _constants(module: ast.Module) -> dict[str, ast.expr]:
    return {
        target.id: node.value
        for node in module.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _strings(node: ast.AST, constants: dict[str, ast.expr]) -> set[str]:
    """The string literals in a key-set expression; `*NAME` is a module constant's strings."""
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Constant) and isinstance(child.value, str):
            found.add(child.value)
        elif isinstance(child, ast.Starred) and isinstance(child.value, ast.Name):
            found |= _strings(constants[child.value.id], constants)
    return found


def keys_in_code() -> dict[str, set[str]]:
    config = _module("config.py")
    constants = _constants(config)
    tables: dict[str, set[str]] = {}
    for function in config.body:
        if not isinstance(function, ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr == "check_keys"
                and isinstance(call.func.value, ast.Name)
            ):
                continue
            where = (function.name, call.func.value.id)
            assert where in TABLE_OF, f"a new table checked in {where}: add it to TABLE_OF"
            tables[TABLE_OF[where]] = _strings(call.args[0], constants)
    rules = _constants(_module("policy/rules.py"))
    for name, table in RULES_TABLES.items():
        tables[table] = _strings(rules[name], rules)
    return tables


def keys_in_reference() -> dict[str, set[str]]:
    """Each `## [table]` section's documented keys: the rows of its table, `| `key` | ...`."""
    text = REFERENCE.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    return {
        section.splitlines()[0].strip(): set(
            re.findall(r"^\| `([A-Za-z_]+)` \|", section, flags=re.MULTILINE)
        )
        for section in sections
        if section.startswith("[")
    }


def test_every_configuration_key_is_in_the_reference_and_no_other() -> None:
    code, documented = keys_in_code(), keys_in_reference()
    top_level = code.pop("top level")
    for table, keys in code.items():
        assert table in documented, f"docs/configuration.md has no section '## {table}'"
        assert documented[table] == keys, (
            f"{table}: undocumented {sorted(keys - documented[table])}, "
            f"documented but not in the code {sorted(documented[table] - keys)}"
        )
    sections = {heading.strip("[]") for heading in documented}
    assert sections == top_level, f"top-level tables {sorted(top_level)}, sections {sections}"


def test_the_reference_shows_the_annotated_example() -> None:
    assert '--8<-- "config.example.toml"' in REFERENCE.read_text(encoding="utf-8")


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail into docs/"


def test_the_readmes_links_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if "://" not in link]
    assert local, "the README links into docs/"
    missing = [link for link in local if link and not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_readmes_client_settings_are_the_status_pages() -> None:
    readme = README.read_text(encoding="utf-8")
    shown = dict(snippets("https://pypi-proxy.example.com/", Usage()))
    for title in ("pip.conf (or PIP_INDEX_URL)", "uv.toml (or [tool.uv] in pyproject.toml)"):
        assert shown[title] in readme, f"README.md's {title} differs from the status page's"
    for title in ("poetry", "pdm (pyproject.toml)"):
        first_block = shown[title].split("\n\n")[0]
        assert first_block in readme, f"README.md's {title} differs from the status page's"


def test_the_readmes_test_command_is_the_one_ci_runs() -> None:
    readme = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "```sh\nbash .ci/run\n```" in readme
    for step in ("apt-get install", "chromium", "redis-server", ".[test,docs]"):
        assert step in ci, step
    for step in ("ruff check", "ruff format --check", "mkdocs build --strict", "pytest"):
        assert step in ci and step in readme, step


def _history_in(paths: list[Path], history: "re.Pattern[str]") -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if history.search(line)
    ]


def test_no_development_history_in_the_readme_or_the_docs() -> None:
    pages = [README, ROOT / "CHANGELOG.md", ROOT / "mkdocs.yml"]
    pages += sorted((ROOT / "docs").rglob("*.md"))
    history = re.compile(r"\bissues? \d+|\bthis stop\b|\bthe levers\b", re.IGNORECASE)
    found = _history_in(pages, history)
    assert not found, "development history belongs in commit messages:\n" + "\n".join(found)


def test_no_development_history_in_docstrings_or_comments() -> None:
    sources = [
        path
        for tree in ("gitlab_pypi_proxy", "bench", "tests")
        for path in sorted((ROOT / tree).rglob("*.py"))
        if path != Path(__file__).resolve()  # its patterns name what they look for
        and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)  # venvs
        and not path.is_relative_to(ROOT / "bench" / "results")  # a bench run's installs
    ]
    history = re.compile(r"\bissues? \d+|\(issue\b|\bthis stop\b", re.IGNORECASE)
    found = _history_in(sources, history)
    assert not found, "development history belongs in commit messages:\n" + "\n".join(found)
