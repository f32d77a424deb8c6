"""The page at `/` for people: the proxy's state as `/readyz` says it, what it runs with, its
processes and their memory, each source's target, health, latency and errors, the views and their
URLs, the private names a public index also has, the cache, uploads, and copy-paste client
settings that follow the configuration, filled in with this proxy's URL. Server-rendered HTML,
every value escaped, no script and no build step. A figure counted since the proxy started (the
metrics: they start again at zero on a restart) says "since start".

The page is a list of sections (`SECTIONS`): each is an async function of the request that
returns a `Section` (a title and its escaped HTML). A new part of the proxy adds its own section
with one line there.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gitlab_pypi_proxy import __version__, metrics, processes
from gitlab_pypi_proxy.config import Config, SourceConfig
from gitlab_pypi_proxy.http.health import cache_state, readiness
from gitlab_pypi_proxy.http.policy_status import policy_rows
from gitlab_pypi_proxy.http.shared_state import shared_rows
from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.sizes import human
from gitlab_pypi_proxy.storage.uploads import Upload

STARTED = time.time()  # this worker's start: the page's uptime

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}
td,th{padding:.25rem .75rem;text-align:left;border-bottom:1px solid #eee}
pre{background:#f5f5f5;padding:.75rem;overflow-x:auto}code{background:#f5f5f5}
.up,.ready{color:#176f2c}.down,.not-ready{color:#b00020}.unknown{color:#666}.degraded{color:#8a5300}
"""


@dataclass(frozen=True)
class Section:
    title: str
    html: str  # escaped already


def _e(value: object) -> str:
    return escape(str(value))


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _ratio(counts: dict[tuple[str, str], float], cache: str) -> str:
    hits = counts.get((cache, "hit"), 0.0)
    total = hits + sum(counts.get((cache, o), 0.0) for o in ("miss", "stale"))
    if not total:
        return "no requests since start"
    return f"{100 * hits / total:.1f}% ({hits:.0f} of {total:.0f}) since start"


def _table(rows: dict[str, str]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows.items())
        + "</table>"
    )


# --- what the configuration allows clients to do --------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What the snippets must say, from the configuration."""

    uploads: bool = True  # some gitlab_project takes uploads (a user may, or passthrough)
    passthrough: bool = False  # GitLab credentials (a CI job token) work as they are
    private_reads: bool = False  # reading needs credentials

    @classmethod
    def of(cls, config: Config) -> "Usage":
        projects = {s.name for s in config.sources if s.kind == "gitlab_project"}
        uploaders = any(
            "*" in u.upload or u.upload & projects for u in config.users if u.gitlab_token
        )
        return cls(
            uploads=bool(projects) and (uploaders or config.auth.passthrough),
            passthrough=config.auth.passthrough,
            private_reads=not config.auth.anonymous_read,
        )


def snippets(base: str, usage: Usage = Usage()) -> list[tuple[str, str]]:
    """(title, text) for each client, for a proxy whose root URL is `base` (ending in /)."""
    index, upload = f"{base}simple/", f"{base}upload/"
    host = base.split("://", 1)[-1].split("/", 1)[0]
    trusted = f"trusted-host = {host.split(':')[0]}\n" if base.startswith("http://") else ""
    login = (
        f"# reads need credentials: in ~/.netrc, `machine {host.split(':')[0]} login <user> "
        "password <password>`\n"
        if usage.private_reads
        else ""
    )
    found = [
        ("pip.conf (or PIP_INDEX_URL)", f"{login}[global]\nindex-url = {index}\n{trusted}"),
        (
            "uv.toml (or [tool.uv] in pyproject.toml)",
            f'{login}[[index]]\nname = "proxy"\nurl = "{index}"\n'
            + (f'publish-url = "{upload}"\n' if usage.uploads else "")
            + "default = true\n",
        ),
        (
            "poetry",
            f"poetry source add --priority=primary proxy {index}\n"
            + (
                f"poetry config repositories.proxy {upload}\npoetry publish --repository proxy\n"
                if usage.uploads
                else ""
            ),
        ),
        (
            "pdm (pyproject.toml)",
            f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{index}"\n'
            + (
                f"\n# publish: pdm publish --repository {upload} "
                "--username <user> --password <password>\n"
                if usage.uploads
                else ""
            ),
        ),
    ]
    if usage.uploads:
        found += [
            (
                "twine (~/.pypirc)",
                "[distutils]\nindex-servers = proxy\n\n[proxy]\n"
                f"repository = {upload}\nusername = <your proxy user name>\n"
                "password = <your proxy password>\n",
            ),
            (
                "uv publish",
                f"uv publish --publish-url {upload} --check-url {index} \\\n"
                "  --username <your proxy user name> --password <your proxy password> dist/*\n"
                "# --check-url: files the index has already are skipped, not refused\n",
            ),
        ]
    publisher = (
        "    TWINE_USERNAME: gitlab-ci-token\n    TWINE_PASSWORD: $CI_JOB_TOKEN\n"
        if usage.passthrough
        else "    # CI/CD variables holding a proxy user's credentials\n"
        "    TWINE_USERNAME: $PYPI_PROXY_USER\n    TWINE_PASSWORD: $PYPI_PROXY_PASSWORD\n"
    )
    publish = (
        "\npublish:\n  image: python:3.12-slim\n  variables:\n"
        + publisher
        + "  script:\n    - pip install build twine\n    - python -m build\n"
        f"    - twine upload --repository-url {upload} dist/*\n"
        if usage.uploads
        else ""
    )
    reader = (
        "  # reads need credentials: a .netrc written from CI/CD variables\n"
        if usage.private_reads
        else ""
    )
    found.append(
        (
            "GitLab CI (.gitlab-ci.yml)",
            f"variables:\n  PIP_INDEX_URL: {index}\n  UV_DEFAULT_INDEX: {index}\n{reader}\n"
            "test:\n  image: python:3.12-slim\n  script:\n    - pip install -r requirements.txt\n"
            + publish,
        )
    )
    return found


# --- the sections -----------------------------------------------------------------------------


async def _samples(request: Request) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The metrics, read once per page (a thread: it reads every worker's files)."""
    found = request.scope.get("status_page.samples")
    if found is None:
        found = request.scope["status_page.samples"] = await asyncio.to_thread(metrics.samples)
    return found


def _auth_mode(config: Config) -> str:
    auth = config.auth
    modes = ["anonymous read" if auth.anonymous_read else "reads need credentials"]
    if config.users:
        count = len(config.users)
        modes.append(f"{count} user{'s' if count > 1 else ''}")
    if auth.passthrough:
        modes.append("passthrough (GitLab credentials)")
    return ", ".join(modes)


async def overview(request: Request) -> Section:
    services = request.app.state.services
    config = services.config
    ready = await readiness(request)
    rows = {
        "Version": __version__,
        "Up for": _duration(time.time() - STARTED),
        "Configuration": str(config.path.resolve()),
        "Access": _auth_mode(config),
    }
    state = ready.state.replace(" ", "-")
    html = (
        f'<p>State: <strong class="{_e(state)}">{_e(ready.state)}</strong> '
        f'({_e(mask_userinfo(ready.mode))}), as <a href="readyz">readyz</a> answers.</p>'
        + _table(rows)
    )
    return Section("State", html)


def _target(source: SourceConfig, config: Config) -> str:
    if source.kind == "url":
        return mask_userinfo(source.target)
    what = "project" if source.kind == "gitlab_project" else "group"
    return f"{mask_userinfo(config.gitlab.url)} {what} {source.target}"


def _credentials(source: SourceConfig, config: Config) -> str:
    if source.is_gitlab:
        return "token set" if config.gitlab.token else "no token"
    return "credentials set" if source.password or source.username else "none"


def _upstream_figures(
    found: dict[str, list[tuple[dict[str, str], float]]], source: str
) -> tuple[str, str]:
    """(mean latency, errors) of a source's upstream calls, from the metrics."""
    total = metrics.PREFIX + "upstream_request_duration_seconds"
    seconds = sum(v for labels, v in found.get(total + "_sum", []) if labels["source"] == source)
    count = sum(v for labels, v in found.get(total + "_count", []) if labels["source"] == source)
    errors = sum(
        v
        for labels, v in found.get(metrics.PREFIX + "upstream_requests_total", [])
        if labels["source"] == source and labels["outcome"] in ("5xx", "timeout", "error")
    )
    latency = f"{1000 * seconds / count:.0f} ms ({count:.0f} calls)" if count else "no calls yet"
    return latency, f"{errors:.0f}"  # both since start: the table's head says so


async def sources(request: Request) -> Section:
    services = request.app.state.services
    config = services.config
    states = await services.health.source_states(services.source_names)
    found = await _samples(request)
    rows = []
    for source in config.sources:
        s: dict[str, Any] = states.get(source.name, {"state": "unknown", "last_ok": None})
        latency, errors = _upstream_figures(found, source.name)
        cells = [
            source.name,
            source.kind,
            _target(source, config),
            _credentials(source, config),
            s["state"],
            _when(s.get("last_ok")),
            mask_userinfo(s.get("reason") or ""),
            latency,
            errors,
        ]
        rows.append(
            "<tr>"
            + "".join(
                f'<td class="{_e(s["state"])}">{_e(c)}</td>' if i == 4 else f"<td>{_e(c)}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Source", "Kind", "Target", "Credentials", "State", "Last reached", "Last error",
            "Mean latency since start", "Errors since start",
        )
    )  # fmt: skip
    body = "".join(rows) or '<tr><td colspan="9">no sources configured</td></tr>'
    html = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        "<p>State learnt from this proxy's own requests to each source in the last 10 minutes;"
        " latency and errors since the proxy started.</p>"
    )
    return Section("Sources", html)


async def workers(request: Request) -> Section:
    found = await asyncio.to_thread(processes.serving)
    rows = "".join(
        f"<tr><td>{_e(p.role)}{' (answered this page)' if p.this else ''}</td>"
        f"<td>{p.pid}</td><td>{_e(human(p.rss) if p.rss is not None else 'ended')}</td></tr>"
        for p in found
    )
    total = sum(p.rss or 0 for p in found)
    html = (
        "<table><thead><tr><th>Process</th><th>PID</th><th>Memory (resident)</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f"<p>{len([p for p in found if p.role == 'worker'])} worker(s) on this machine, "
        f"{_e(human(total))} resident in all (in a cluster: this replica's).</p>"
    )
    return Section("Workers", html)


async def views(request: Request) -> Section:
    services = request.app.state.services
    base = mask_userinfo(str(request.base_url))
    configured = services.config.views
    if not configured:
        return Section("Views", "<p>None configured: <code>simple/</code> serves every source.</p>")
    rows = "".join(
        f"<tr><td>{_e(v.name)}</td><td><code>{_e(f'{base}{v.name}/simple/')}</code></td>"
        f"<td>{_e(', '.join(v.sources))}</td></tr>"
        for v in configured
    )
    html = (
        "<table><thead><tr><th>View</th><th>Index URL</th><th>Sources, in priority order</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        "<p>Each view is the index over its sources alone, with every rule of the whole index;"
        " a user sees the sources of a view it may read.</p>"
    )
    return Section("Views", html)


async def shadowed(request: Request) -> Section:
    kept = request.app.state.services.composed.shadows.kept
    seen = await kept.seen() if kept is not None else []
    if not seen:
        return Section(
            "Private names also on a public index", "<p>None seen (since the cache was made).</p>"
        )
    items = "".join(
        f"<li><code>{_e(name)}</code> on {_e(source)}, seen {_e(_when(at))}</li>"
        for name, source, at in seen
    )
    html = (
        "<p>These names are served from the GitLab sources only: a public package of the same"
        " name is never served for them (it may be a dependency-confusion attempt).</p>"
        f"<ul>{items}</ul>"
    )
    return Section("Private names also on a public index", html)


async def cache(request: Request) -> Section:
    services = request.app.state.services
    config = services.config
    files = await asyncio.to_thread(services.stores.blobs.stats)
    found = await _samples(request)
    counts = {
        (labels["cache"], labels["outcome"]): v
        for labels, v in found.get(metrics.PREFIX + "cache_lookups_total", [])
    }
    evictions = sum(v for _, v in found.get(metrics.PREFIX + "cache_evictions_total", []))
    writable = await cache_state(request)
    rows = {
        "Files cached": (
            f"{files.entries} ({human(files.bytes)} of {human(config.cache.max_size)})"
        ),
        "File hit ratio": _ratio(counts, "file"),
        "Index page hit ratio": _ratio(counts, "page"),
        "Index pages fresh for": f"{config.cache.index_ttl} s",
        "Evictions": f"{evictions:.0f} files since start",
        "Cache directory": writable.describe(),
        "Mode": "offline (cache only)" if config.cache.offline else "online",
        **shared_rows(services.stores),
    }
    return Section("Cache", _table(rows))


def _uploads_html(uploads: list[Upload], failed: float) -> str:
    listed = (
        "<ul>"
        + "".join(
            f"<li><code>{_e(u.filename)}</code> to {_e(u.source)} by {_e(u.user)}, "
            f"{_e(_when(u.at))}</li>"
            for u in uploads
        )
        + "</ul>"
        if uploads
        else "<p>none yet</p>"
    )
    return f"<p>Failed uploads since start: {failed:.0f}</p>{listed}"


async def uploads(request: Request) -> Section:
    services = request.app.state.services
    found = await _samples(request)
    failed = sum(
        v
        for labels, v in found.get(metrics.PREFIX + "uploads_total", [])
        if not labels["outcome"].startswith("2")
    )
    return Section("Recent uploads", _uploads_html(await services.uploads.latest(), failed))


async def policy(request: Request) -> Section:
    services = request.app.state.services
    verdicts = await asyncio.to_thread(metrics.policy_counts)
    by_rule = await asyncio.to_thread(metrics.policy_rule_counts)
    rows = policy_rows(services.config.guard.policy, services.advisories, verdicts, by_rule)
    return Section("Supply-chain policy", _table(rows))


async def use(request: Request) -> Section:
    base = mask_userinfo(str(request.base_url))  # built from the client's Host header
    usage = Usage.of(request.app.state.services.config)
    blocks = "".join(
        f"<h3>{_e(title)}</h3><pre><code>{_e(text)}</code></pre>"
        for title, text in snippets(base, usage)
    )
    return Section("Use this proxy", blocks)


# The page, top to bottom: one line per section.
SECTIONS: list[Callable[[Request], Awaitable[Section]]] = [
    overview,
    workers,
    sources,
    views,
    shadowed,
    cache,
    policy,
    uploads,
    use,
]


def render(base: str, sections: list[Section]) -> str:
    base = mask_userinfo(base)
    body = "".join(f"<h2>{_e(s.title)}</h2>\n{s.html}\n" for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gitlab-pypi-proxy</title><style>{_STYLE}</style></head>
<body>
<h1>gitlab-pypi-proxy</h1>
<p>Package index: <a href="simple/"><code>{_e(base)}simple/</code></a></p>
{body}<p><a href="healthz">healthz</a> · <a href="readyz">readyz</a> ·
<a href="metrics">metrics</a></p>
</body></html>
"""


async def status_page(request: Request) -> Response:
    sections = [await section(request) for section in SECTIONS]
    html = render(str(request.base_url), sections)
    return HTMLResponse(html, headers={"cache-control": "no-store"})
