"""Where a `url` source's files may be fetched from: its index's own origin and the hosts its
`file_hosts` lists, checked on every hop before anything is sent.

A page is untrusted (whoever publishes a project writes its file URLs) and an index may redirect
anywhere; fetched blindly, a URL on another port, on the proxy's own `/metrics` or on a service
inside the network would have its body streamed to the client and its size shown by HEAD. So
the destinations are configuration: a file, a sidecar or a redirect hop anywhere else is a 502
naming this rule. A host named without a port allows its scheme's standard port only.

GitLab sources have no such rule: the proxy builds their file URLs on the configured GitLab URL
(never from a page), and only GitLab chooses where it redirects them (its object storage).
"""

from dataclasses import dataclass

import httpx2

from gitlab_pypi_proxy.errors import SourceUnavailable
from gitlab_pypi_proxy.sources.upstream_bounds import stopped

_STANDARD_PORTS = {"http": 80, "https": 443}


def _host(url: httpx2.URL) -> str:
    return f"[{url.host}]" if ":" in url.host else url.host


def _port(url: httpx2.URL) -> int | None:
    return url.port or _STANDARD_PORTS.get(url.scheme)


@dataclass(frozen=True)
class FileHosts:
    """A `url` source's rule: `index` is its index URL, `hosts` its file_hosts ("host" or
    "host:port", lower-case)."""

    source: str
    index: str
    hosts: tuple[str, ...] = ()

    def allows(self, url: httpx2.URL) -> bool:
        """May a request for one of this source's files go to `url`?"""
        index = httpx2.URL(self.index)
        if (url.scheme, url.host, _port(url)) == (index.scheme, index.host, _port(index)):
            return True
        if url.scheme not in _STANDARD_PORTS:
            return False
        host, port = _host(url).lower(), _port(url)
        return (port == _STANDARD_PORTS[url.scheme] and host in self.hosts) or (
            f"{host}:{port}" in self.hosts
        )

    def refused(self, url: httpx2.URL, *, redirected: bool) -> SourceUnavailable:
        """The 502 for a request this rule does not allow, counted: the rule and the host,
        never a URL (it may hold credentials or a signed query)."""
        index = httpx2.URL(self.index)
        own = f"{index.scheme}://{_host(index)}:{_port(index)}"
        listed = ", ".join(self.hosts) or "none"
        what = "a redirect to" if redirected else "a file on"
        return stopped(
            self.source,
            "file_hosts",
            f"refused {what} {_host(url)}:{_port(url) or '?'}: a url source's files are fetched "
            f"only from its index's own origin ({own}) and its file_hosts ({listed})",
        )
