"""The page at `/` for people: sources and their health, the cache, recent uploads, and
copy-paste client settings filled in with this proxy's URL. Server-rendered HTML, every value
escaped, no script and no build step.
"""

import asyncio
from datetime import UTC, datetime
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy import metrics
from proxy.http.health import cache_state
from proxy.redact import mask_userinfo
from proxy.sizes import human
from proxy.storage.uploads import Upload

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse}
td,th{padding:.25rem .75rem;text-align:left;border-bottom:1px solid #eee}
pre{background:#f5f5f5;padding:.75rem;overflow-x:auto}code{background:#f5f5f5}
.up{color:#176f2c}.down{color:#b00020}.unknown{color:#666}
"""


def _when(stamp: float | None) -> str:
    if not stamp:
        return "never"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ratio(counts: dict[tuple[str, str], float], cache: str) -> str:
    hits = counts.get((cache, "hit"), 0.0)
    total = hits + sum(counts.get((cache, o), 0.0) for o in ("miss", "stale"))
    if not total:
        return "no requests yet"
    return f"{100 * hits / total:.1f}% ({hits:.0f} of {total:.0f})"


def snippets(base: str) -> list[tuple[str, str]]:
    """(title, text) for each client, for a proxy whose root URL is `base` (ending in /)."""
    index, upload = f"{base}simple/", f"{base}upload/"
    host = base.split("://", 1)[-1].split("/", 1)[0]
    trusted = f"trusted-host = {host.split(':')[0]}\n" if base.startswith("http://") else ""
    return [
        ("pip.conf (or PIP_INDEX_URL)", f"[global]\nindex-url = {index}\n{trusted}"),
        (
            "uv.toml (or [tool.uv] in pyproject.toml)",
            f'[[index]]\nname = "proxy"\nurl = "{index}"\npublish-url = "{upload}"\n'
            "default = true\n",
        ),
        (
            "poetry",
            f"poetry source add --priority=primary proxy {index}\n"
            f"poetry config repositories.proxy {upload}\n"
            "poetry publish --repository proxy\n",
        ),
        (
            "twine (~/.pypirc)",
            "[distutils]\nindex-servers = proxy\n\n[proxy]\n"
            f"repository = {upload}\nusername = <your proxy user name>\n"
            "password = <your proxy password>\n",
        ),
        (
            "GitLab CI (.gitlab-ci.yml)",
            f"variables:\n  PIP_INDEX_URL: {index}\n  UV_DEFAULT_INDEX: {index}\n\n"
            "test:\n  image: python:3.12-slim\n  script:\n    - pip install -r requirements.txt\n\n"
            "publish:\n  image: python:3.12-slim\n  variables:\n"
            "    TWINE_USERNAME: gitlab-ci-token\n    TWINE_PASSWORD: $CI_JOB_TOKEN\n"
            "  script:\n    - pip install build twine\n    - python -m build\n"
            f"    - twine upload --repository-url {upload} dist/*\n",
        ),
    ]


def render(
    base: str,
    sources: list[tuple[str, str, dict[str, Any]]],
    cache: dict[str, str],
    uploads: list[Upload],
) -> str:
    e = escape
    base = mask_userinfo(base)  # built from the client's Host header
    rows = (
        "".join(
            f'<tr><td>{e(name)}</td><td>{e(kind)}</td><td class="{e(s["state"])}">{e(s["state"])}'
            f"</td><td>{e(_when(s['last_ok']))}</td><td>{e(mask_userinfo(s['reason'] or ''))}"
            "</td></tr>"
            for name, kind, s in sources
        )
        or '<tr><td colspan="5">no sources configured</td></tr>'
    )
    cache_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in cache.items())
    recent = (
        "<ul>"
        + "".join(
            f"<li><code>{e(u.filename)}</code> to {e(u.source)} by {e(u.user)}, {e(_when(u.at))}"
            "</li>"
            for u in uploads
        )
        + "</ul>"
        if uploads
        else "<p>none yet</p>"
    )
    blocks = "".join(
        f"<h3>{e(title)}</h3><pre><code>{e(text)}</code></pre>" for title, text in snippets(base)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gitlab-pypi-proxy</title><style>{_STYLE}</style></head>
<body>
<h1>gitlab-pypi-proxy</h1>
<p>Package index: <a href="simple/"><code>{e(base)}simple/</code></a></p>
<h2>Sources</h2>
<table><thead><tr><th>Source</th><th>Kind</th><th>State</th><th>Last reached</th><th>Last error</th>
</tr></thead><tbody>{rows}</tbody></table>
<p>State learnt from this proxy's own requests to each source in the last 10 minutes.</p>
<h2>Cache</h2>
<table>{cache_rows}</table>
<h2>Recent uploads</h2>
{recent}
<h2>Use this proxy</h2>
{blocks}
<p><a href="healthz">healthz</a> · <a href="readyz">readyz</a> · <a href="metrics">metrics</a></p>
</body></html>
"""


async def status_page(request: Request) -> Response:
    services = request.app.state.services
    kinds = {s.name: s.kind for s in services.config.sources}
    names = services.source_names
    states = await services.health.source_states(names)
    files = await asyncio.to_thread(services.stores.blobs.stats)
    counts = await asyncio.to_thread(metrics.cache_counts)
    writable = await cache_state(request)
    cache = {
        "Files cached": (
            f"{files.entries} ({human(files.bytes)} of {human(services.config.cache.max_size)})"
        ),
        "File hit ratio": _ratio(counts, "file"),
        "Index page hit ratio": _ratio(counts, "page"),
        "Index pages fresh for": f"{services.config.cache.index_ttl} s",
        "Cache directory": writable.describe(),
        "Mode": "offline (cache only)" if services.config.cache.offline else "online",
    }
    uploads = await services.uploads.latest()
    base = str(request.base_url)
    html = render(base, [(n, kinds.get(n, "?"), states[n]) for n in names], cache, uploads)
    return HTMLResponse(html, headers={"cache-control": "no-store"})
