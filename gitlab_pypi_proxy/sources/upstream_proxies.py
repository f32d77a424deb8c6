"""Which proxy each upstream request goes through: the environment's HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY and NO_PROXY (either case), read as httpx2 reads them for a client of its own.

The proxy brings its own transports (watched pools), which turns httpx2's reading of the
environment off, so it is read here, with the standard library's `urllib.request.getproxies()`,
into httpx2 mount patterns (`http://`, `all://*example.com`) mapped to a proxy URL, or to None
for "direct". NO_PROXY follows curl: `*` turns every proxy off; an IP address, an IPv6 address,
a network (`10.0.0.0/8`, `fe80::/10`) or `localhost` matches that host; `.example.com` and
`*.example.com` match hosts under it; `example.com` matches it and hosts under it; a URL
(`http://host:8080`) matches that scheme, host and port. An entry that is none of these is
ignored, as curl and Go ignore it.
"""

import ipaddress
from urllib.request import getproxies

import httpx2


def environment_proxies() -> dict[str, str | None]:
    """Mount pattern → proxy URL, or None where requests go direct."""
    found = getproxies()
    mounts: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if url := found.get(scheme):
            mounts[f"{scheme}://"] = url if "://" in url else f"http://{url}"
    for entry in (part.strip() for part in found.get("no", "").split(",")):
        if entry == "*":
            return {}
        if entry and (pattern := _no_proxy_pattern(entry)) is not None:
            mounts[pattern] = None
    return mounts


def _no_proxy_pattern(entry: str) -> str | None:
    address = _address(entry)
    if "://" in entry:
        pattern = entry
    elif address is not None and address.version == 4:
        pattern = f"all://{entry}"
    elif address is not None:
        host, slash, bits = entry.partition("/")
        pattern = f"all://[{host}]/{bits}" if slash else f"all://[{host.replace('%', '%25')}]"
    elif entry.lower() == "localhost" or entry.startswith("["):
        pattern = f"all://{entry}"
    elif "/" in entry:
        return None
    elif entry.startswith("*."):
        pattern = f"all://{entry}"
    else:
        pattern = f"all://*{entry}"  # `.example.com` → `*.example.com`
    return pattern if _parses(pattern) else None


def _address(entry: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(entry.split("/")[0])
    except ValueError:
        return None


def _parses(pattern: str) -> bool:
    """A pattern httpx2's mounts take: a URL, and where it names a network, a valid one."""
    try:
        url = httpx2.URL(pattern)
        url.host  # noqa: B018 (a label httpx2 cannot decode, `*xn--…`, raises here)
    except (httpx2.InvalidURL, ValueError):  # ValueError: idna's errors
        return False
    bits = url.path.removeprefix("/")
    if not bits or _address(url.host) is None:
        return True
    host = f"[{url.host}]" if ":" in url.host else url.host
    if "@" in pattern or "%" in pattern or not bits.isdigit():
        return False
    if not pattern.endswith(f"{host}/{bits}"):
        return False
    try:
        ipaddress.ip_network(f"{url.host}/{bits}", strict=False)
    except ValueError:
        return False
    return True
