"""TOML configuration → frozen dataclasses. Every error names the file, the key and the problem.

A value that loads must also run: every number is finite and within a stated range (a nan timeout,
an overflowing size or 100,000 workers fail in `serve` only, as tracebacks), and every string that
ends up in a header or a URL is checked for the characters that would break it there.
"""

import dataclasses
import hashlib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gitlab_pypi_proxy.names import InvalidName, validate
from gitlab_pypi_proxy.passwords import InvalidHash, parse_hash
from gitlab_pypi_proxy.policy import rules
from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.workers import MAX_WORKERS

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
SOURCE_KINDS = ("gitlab_project", "gitlab_group", "url")  # each built by services.KINDS
# A host name, an IPv4 address or a bracketed IPv6 address, and an optional port.
_FILE_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>\d{1,5}))?"
)
# Where an index keeps its files, when its `url` source lists no file_hosts of its own.
_DEFAULT_FILE_HOSTS = {
    "pypi.org": ("files.pythonhosted.org",),
    "test.pypi.org": ("test-files.pythonhosted.org",),
}
MAX_SIZE = 2**50  # 1024 TiB: any larger size is a typo, and would overflow SQLite's integers
_HOUR, _DAY, _YEAR = 3600, 86400, 365 * 86400
_MILLION = 10**6
# A realm is a quoted string in a header: visible ASCII and spaces, no quote or backslash.
_REALM = re.compile(r"[ !#-\[\]-~]{1,200}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
# The first path segments the proxy's own routes take: a view of such a name could not be reached.
RESERVED_PATHS = frozenset(
    {"simple", "files", "upload", "legacy", "healthz", "readyz", "metrics", "pypi"}
)


class ConfigError(Exception):
    """A configuration problem, as one line: `<file>: <key>: <what is wrong>`."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int | str = "auto"  # a number, or "auto": gitlab_pypi_proxy.workers decides at start
    log_level: str = "info"
    log_format: str = "text"  # or "json"
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-* count
    base_path: str = ""  # "/pypi" to serve under a path prefix; "" for the root
    graceful_shutdown: float = 30.0  # seconds in-flight requests get to finish on SIGTERM
    header_timeout: float = 30.0  # seconds a client has to send a whole request head
    # nginx in front sends cached files itself: X-Accel-Redirect to <prefix><path under files/>
    accel_redirect: str = ""


@dataclass(frozen=True)
class CacheConfig:
    directory: Path = Path("./cache")
    max_size: int = 20 * 2**30
    index_ttl: int = 300
    offline: bool = False
    negative_ttl: int = 300  # seconds a "not here" answer is kept; [cache] index_ttl if unset
    warm_dependencies: bool = True  # the pages of what a wheel being installed requires
    max_page_size: int = 64 * 2**20  # an upstream page or API answer, decoded; larger: a 502


@dataclass(frozen=True)
class GitLabConfig:
    url: str = ""
    token: str | None = None
    # GitLab ignores the user name, except "gitlab-ci-token", which marks a CI job token.
    username: str = "gitlab-pypi-proxy"
    timeout: float = 30.0
    # GitLab stores an uploaded file before it answers: the wait for its answer, once the whole
    # upload is sent, has a bound of its own.
    upload_timeout: float = 300.0
    # Shared by every GitLab source (they share the token GitLab counts against): half of
    # gitlab.com's 2,000 API requests a minute for a token.
    max_requests_per_minute: int = 1000

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v4"


@dataclass(frozen=True)
class SourceConfig:
    name: str
    kind: str  # one of SOURCE_KINDS
    target: str  # project id/path, group id/path, or index URL
    username: str | None = None
    password: str | None = None
    allow_public: frozenset[str] = frozenset()
    yanked: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # a url source's files come from its index's own origin and these hosts ("host" or
    # "host:port", lower-case) only; gitlab_pypi_proxy.sources.file_hosts
    file_hosts: tuple[str, ...] = ()

    @property
    def is_gitlab(self) -> bool:
        return self.kind != "url"


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: str | None = None
    password_hash: str | None = None
    read: frozenset[str] = frozenset({"*"})
    upload: frozenset[str] = frozenset()
    gitlab_token: str | None = None


@dataclass(frozen=True)
class AuthConfig:
    anonymous_read: bool = True
    passthrough: bool = False
    realm: str = "gitlab-pypi-proxy"
    failed_logins_per_minute: int = 30  # per client address, then 429
    operators: frozenset[str] = frozenset()  # users who may read /readyz and /metrics; empty: all
    admins: frozenset[str] = frozenset()  # users who may use the operator API (/-/...)


@dataclass(frozen=True)
class ViewConfig:
    """`[[views]]`: the index over some of the sources, served at /<name>/simple/."""

    name: str
    sources: tuple[str, ...]  # in the view's own priority order


@dataclass(frozen=True)
class UploadConfig:
    default_source: str | None = None
    max_size: int = 3 * 2**30  # bytes of a whole upload request; GitLab's default file limit


@dataclass(frozen=True)
class StorageConfig:
    """Where distribution files live: "local" (under [cache] directory) or an S3 bucket."""

    backend: str = "local"  # or "s3"
    endpoint_url: str | None = None  # None: AWS S3
    bucket: str = ""
    prefix: str = "files/"  # objects are <prefix><sha256>
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    redirect: bool = False  # answer a download with a presigned URL, after the read check


@dataclass(frozen=True)
class ClusterConfig:
    """What replicas share beyond the bucket: locks, index records, news of changes, values."""

    redis_url: str | None = field(default=None, repr=False)  # None: one machine, no Redis


@dataclass(frozen=True)
class Config:
    path: Path
    server: ServerConfig
    cache: CacheConfig
    gitlab: GitLabConfig
    sources: tuple[SourceConfig, ...]
    auth: AuthConfig = AuthConfig()
    users: tuple[UserConfig, ...] = ()
    upload: UploadConfig = UploadConfig()
    # [policy], [audit] and the sources' include/exclude (gitlab_pypi_proxy.policy.rules)
    guard: rules.GuardSettings = field(
        default_factory=lambda: rules.GuardSettings(rules.PolicySettings(), rules.AuditSettings())
    )
    storage: StorageConfig = StorageConfig()
    cluster: ClusterConfig = ClusterConfig()
    views: tuple[ViewConfig, ...] = ()

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def digest(self) -> str:
        """A digest of every setting, the same in every process that read the same ones (sets
        sorted: their order differs between processes)."""
        settings = json.dumps(dataclasses.asdict(self), sort_keys=True, default=_plain)
        return hashlib.sha256(settings.encode()).hexdigest()


def _plain(value: object) -> object:
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    return repr(value)


def parse_size(text: str | int) -> int:
    """'20GiB' → bytes, at most MAX_SIZE. Raises ValueError for anything else."""
    if isinstance(text, int) and not isinstance(text, bool):
        size: float = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(f"not a size: {text!r} (use e.g. 500MiB, 20GiB)")
        number, unit = match.groups()
        size = float(number) * _UNITS[(unit or "B").upper()]  # inf for 400 digits: refused below
    if size > MAX_SIZE:
        raise ValueError("more than the largest size, 1024TiB")
    return int(size)


class _Reader:
    """Reads one table of the document, naming `file: key` in every error."""

    def __init__(self, file: Path, table: Mapping[str, Any], prefix: str) -> None:
        self.file, self.table, self.prefix = file, table, prefix

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.prefix}{key}: {message}")

    def _get(self, key: str, kinds: type | tuple[type, ...], default: Any, label: str) -> Any:
        value = self.table.get(key, default)
        if value is default:
            return default
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in allowed:
            raise self.error(key, f"expected {label}, got a boolean")
        if not isinstance(value, kinds):
            raise self.error(key, f"expected {label}, got {type(value).__name__}")
        return value

    def string(self, key: str, default: Any = None, *, secret: bool = False) -> Any:
        value = self._get(key, str, default, "a string")
        if isinstance(value, str):
            value = self._expand(key, value, optional=secret)
        if isinstance(value, str) and "\0" in value:
            raise self.error(key, "must not hold a NUL character")
        return value

    def token(self, key: str) -> str | None:
        """A secret sent to GitLab: unset or empty is None. Never named in an error."""
        value = self.string(key, secret=True) or None
        if value is not None and (not value.isprintable() or " " in value):
            raise self.error(
                key,
                "holds whitespace or a control character (a newline at the end of an "
                "environment variable or a secret file?)",
            )
        return value

    def integer(self, key: str, default: int, *, minimum: int = 0, maximum: int) -> int:
        value = self._get(key, int, default, "an integer")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum}")
        return int(value)

    def number(self, key: str, default: float, *, maximum: float) -> float:
        """A positive, finite number of seconds, at most `maximum`."""
        value = self._get(key, (int, float), default, "a number")
        if not math.isfinite(value):
            raise self.error(key, f"must be a finite number, got {value}")
        if value <= 0:
            raise self.error(key, "must be positive")
        if value > maximum:
            raise self.error(key, f"must be at most {maximum:g} seconds")
        return float(value)

    def size(self, key: str, default: str, *, minimum: int = 0) -> int:
        """A size such as "20GiB" (or a number of bytes)."""
        try:
            size = parse_size(self._get(key, (str, int), default, f"a size such as {default}"))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if size < minimum:
            raise self.error(key, f"must be at least {minimum} bytes")
        return size

    def boolean(self, key: str, default: bool) -> bool:
        return bool(self._get(key, bool, default, "true or false"))

    def strings(self, key: str, default: frozenset[str]) -> frozenset[str]:
        value = self._get(key, list, None, "a list of strings")
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.error(key, "expected a list of strings")
        return frozenset(value)

    def _expand(self, key: str, value: str, *, optional: bool) -> str | None:
        missing = [v for v in _ENV_REF.findall(value) if v not in os.environ]
        if missing:
            if optional and _ENV_REF.fullmatch(value):
                return None  # an unset optional secret means "none": anonymous access
            raise self.error(key, f"environment variable {missing[0]} is not set")
        return _ENV_REF.sub(lambda m: os.environ[m.group(1)], value)

    def table_at(self, key: str) -> "_Reader":
        value = self._get(key, dict, {}, "a table")
        return _Reader(self.file, value, f"{self.prefix}{key}.")

    def tables_at(self, key: str) -> list["_Reader"]:
        value = self._get(key, list, [], "an array of tables ([[...]])")
        if not all(isinstance(v, dict) for v in value):
            raise self.error(key, "expected an array of tables ([[...]])")
        return [_Reader(self.file, v, f"{key}[{i}].") for i, v in enumerate(value)]

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise self.error(unknown[0], "unknown key")


def _http_url(reader: _Reader, key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or not value.isprintable():
        raise reader.error(key, f"expected an http(s) URL, got {mask_userinfo(value)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise reader.error(key, f"not a port number in {mask_userinfo(value)!r}") from None
    if " " in value:
        raise reader.error(key, f"a URL holds no spaces (%20): {mask_userinfo(value)!r}")
    return value.rstrip("/")


def _server(r: _Reader) -> ServerConfig:
    r.check_keys(
        {
            "host",
            "port",
            "workers",
            "log_level",
            "log_format",
            "trusted_proxies",
            "base_path",
            "graceful_shutdown",
            "header_timeout",
            "accel_redirect",
        }
    )
    level = r.string("log_level", "info").lower()
    if level not in ("debug", "info", "warning", "error"):
        raise r.error("log_level", "expected one of debug, info, warning, error")
    log_format = r.string("log_format", "text").lower()
    if log_format not in ("text", "json"):
        raise r.error("log_format", "expected text or json")
    port = r.integer("port", 8080, maximum=65535)
    host = r.string("host", "127.0.0.1")
    if not _is_host(host):
        raise r.error("host", f"expected an IP address or a host name, got {host!r}")
    trusted = r.strings("trusted_proxies", frozenset())
    for entry in sorted(trusted):
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise r.error("trusted_proxies", f"not an address or network: {entry!r}") from None
    base_path = "/" + r.string("base_path", "").strip("/")
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", base_path) or "//" in base_path:
        raise r.error("base_path", "expected a path such as /pypi")
    accel = r.string("accel_redirect", "")
    segments = accel[1:-1].split("/")
    if accel and (
        not (accel.startswith("/") and accel.endswith("/") and len(accel) > 1)
        or not all(re.fullmatch(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*", s) for s in segments)
    ):
        raise r.error(
            "accel_redirect", 'expected an internal location\'s prefix, such as "/_cached/"'
        )
    return ServerConfig(
        host=host,
        port=port,
        workers=_workers(r),
        log_level=level,
        log_format=log_format,
        trusted_proxies=tuple(sorted(trusted)),
        base_path=base_path.rstrip("/"),
        graceful_shutdown=r.number("graceful_shutdown", 30.0, maximum=_HOUR),
        header_timeout=r.number("header_timeout", 30.0, maximum=_HOUR),
        accel_redirect=accel,
    )


def _is_host(host: str) -> bool:
    """An address to listen on: an IP address or a name such as localhost."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _HOST.fullmatch(host) is not None and ".." not in host


def _workers(r: _Reader) -> int | str:
    value = r.table.get("workers", "auto")
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise r.error("workers", f'expected "auto" or a number, got {value!r}')
    return r.integer("workers", 1, minimum=1, maximum=MAX_WORKERS)


def _cache(r: _Reader, base: Path) -> CacheConfig:
    r.check_keys(
        {"directory", "max_size", "index_ttl", "negative_ttl", "offline", "warm_dependencies"}
        | {"max_page_size"}
    )
    directory = Path(r.string("directory", "./cache")).expanduser()
    index_ttl = r.integer("index_ttl", 300, maximum=_YEAR)
    return CacheConfig(
        directory=directory if directory.is_absolute() else base / directory,
        max_size=r.size("max_size", "20GiB"),
        index_ttl=index_ttl,
        offline=r.boolean("offline", False),
        negative_ttl=r.integer("negative_ttl", index_ttl, maximum=_YEAR),
        warm_dependencies=r.boolean("warm_dependencies", True),
        max_page_size=r.size("max_page_size", "64MiB", minimum=2**20),
    )


def _gitlab(r: _Reader, needed: bool) -> GitLabConfig:
    r.check_keys(
        {"url", "token", "username", "timeout", "upload_timeout", "max_requests_per_minute"}
    )
    url = r.string("url")
    if url is None:
        if needed:
            raise r.error("url", "required when a gitlab_project or gitlab_group source is set")
        return GitLabConfig()
    return GitLabConfig(
        url=_http_url(r, "url", url),
        token=r.token("token"),
        username=r.string("username", "gitlab-pypi-proxy"),
        timeout=r.number("timeout", 30.0, maximum=_HOUR),
        upload_timeout=r.number("upload_timeout", 300.0, maximum=_DAY),
        max_requests_per_minute=r.integer(
            "max_requests_per_minute", 1000, minimum=1, maximum=_MILLION
        ),
    )


def _storage(r: _Reader) -> StorageConfig:
    r.check_keys(
        {
            "backend",
            "endpoint_url",
            "bucket",
            "prefix",
            "region",
            "access_key_id",
            "secret_access_key",
            "redirect",
        }
    )
    backend = r.string("backend", "local")
    if backend not in ("local", "s3"):
        raise r.error("backend", f'expected "local" or "s3", got {backend!r}')
    if backend == "local":
        extra = sorted(set(r.table) - {"backend"})
        if extra:
            raise r.error(extra[0], 'only with backend = "s3"')
        return StorageConfig()
    endpoint = r.string("endpoint_url")
    bucket = r.string("bucket")
    if not bucket:
        raise r.error("bucket", 'required with backend = "s3"')
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise r.error("bucket", f"not an S3 bucket name: {bucket!r}")
    prefix = r.string("prefix", "files/")
    if prefix and (not prefix.endswith("/") or prefix.startswith("/") or "//" in prefix):
        raise r.error("prefix", f'expected a key prefix such as "files/", got {prefix!r}')
    key_id = r.string("access_key_id", secret=True) or None
    secret = r.string("secret_access_key", secret=True) or None
    if (key_id is None) != (secret is None):
        raise r.error("access_key_id", "set both access_key_id and secret_access_key, or neither")
    return StorageConfig(
        backend=backend,
        endpoint_url=None if endpoint is None else _http_url(r, "endpoint_url", endpoint),
        bucket=bucket,
        prefix=prefix,
        region=r.string("region", "us-east-1"),
        access_key_id=key_id,
        secret_access_key=secret,
        redirect=r.boolean("redirect", False),
    )


def _cluster(r: _Reader) -> ClusterConfig:
    r.check_keys({"redis_url"})
    url = r.string("redis_url")
    if url is None:
        if r.table:
            raise r.error("redis_url", "required in [cluster]")
        return ClusterConfig()
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
        raise r.error(
            "redis_url",
            f"expected a redis://, rediss:// or unix:// URL, got {mask_userinfo(url)!r}",
        )
    return ClusterConfig(redis_url=url)


def _source(r: _Reader) -> SourceConfig:
    r.check_keys(
        {"name", *SOURCE_KINDS, "username", "password", "allow_public", "yanked", "file_hosts"}
        | {"include", "exclude"}  # read by gitlab_pypi_proxy.policy.rules
    )
    name = r.string("name")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise r.error("name", "required: letters, digits, '.', '_' or '-'")
    kinds = [k for k in SOURCE_KINDS if k in r.table]
    if len(kinds) != 1:
        raise r.error("name", f"source {name!r} needs exactly one of {', '.join(SOURCE_KINDS)}")
    kind = kinds[0]
    raw = r.table[kind]
    if kind != "url" and isinstance(raw, int) and not isinstance(raw, bool):
        target = str(raw)  # a numeric project or group id
    else:
        target = r.string(kind)
        if not target:
            raise r.error(kind, "must not be empty")
    if kind == "url":
        target = _http_url(r, kind, target) + "/"
    try:
        allow_public = frozenset(validate(n) for n in r.strings("allow_public", frozenset()))
    except InvalidName as exc:
        raise r.error("allow_public", str(exc)) from None
    yanked_r = r.table_at("yanked")  # name = [versions]
    yanked = {}
    for project in yanked_r.table:
        versions = yanked_r.strings(project, frozenset())
        try:
            yanked[validate(project)] = versions
        except InvalidName as exc:
            raise yanked_r.error(project, str(exc)) from None
    return SourceConfig(
        name=name,
        kind=kind,
        target=target,
        username=r.string("username"),
        password=r.string("password", secret=True),
        allow_public=allow_public,
        yanked=yanked,
        file_hosts=_file_hosts(r, kind, target),
    )


def _file_hosts(r: _Reader, kind: str, target: str) -> tuple[str, ...]:
    """The hosts besides its own origin a `url` source's files may be fetched from."""
    hosts = r.strings("file_hosts", frozenset()) if "file_hosts" in r.table else None
    if hosts is None:
        return _DEFAULT_FILE_HOSTS.get(urlsplit(target).hostname or "", ()) if kind == "url" else ()
    if kind != "url":
        raise r.error("file_hosts", "only on a url source (GitLab chooses where its files are)")
    for host in sorted(hosts):
        match = _FILE_HOST.fullmatch(host)
        if not match or not 0 < int(match["port"] or 1) < 65536:
            raise r.error(
                "file_hosts",
                f"expected host names such as files.pythonhosted.org or host:port, got {host!r}",
            )
    return tuple(sorted(h.lower() for h in hosts))


def _view(r: _Reader, source_names: list[str]) -> ViewConfig:
    r.check_keys({"name", "sources"})
    name = r.string("name")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise r.error("name", "required: letters, digits, '.', '_' or '-' (it is a URL path)")
    if name.lower() in RESERVED_PATHS:
        raise r.error("name", f"{name!r} is one of the proxy's own paths: choose another name")
    listed = r.table.get("sources")
    if not isinstance(listed, list) or not listed or not all(isinstance(s, str) for s in listed):
        raise r.error("sources", "expected a non-empty list of source names, in priority order")
    for source in listed:
        if source not in source_names:
            raise r.error("sources", f"no source named {source!r}")
        if listed.count(source) > 1:
            raise r.error("sources", f"{source!r} is listed twice")
    return ViewConfig(name=name, sources=tuple(listed))


def _user(r: _Reader, source_names: set[str]) -> UserConfig:
    r.check_keys({"name", "password", "password_hash", "read", "upload", "gitlab_token"})
    name = r.string("name")
    if not name:
        raise r.error("name", "required")
    if ":" in name:
        raise r.error("name", f"{name!r} can never log in: Basic credentials end it at the ':'")
    if not name.isprintable():
        raise r.error("name", f"{name!r} holds a control character")
    password, password_hash = r.string("password"), r.string("password_hash")
    if (password is None) == (password_hash is None):
        raise r.error("password", f"user {name!r} needs exactly one of password, password_hash")
    if password_hash is not None:
        try:
            parse_hash(password_hash)
        except InvalidHash as exc:
            raise r.error("password_hash", str(exc)) from None
    read, upload = r.strings("read", frozenset({"*"})), r.strings("upload", frozenset())
    for key, names in (("read", read), ("upload", upload)):
        unknown = sorted(names - source_names - {"*"})
        if unknown:
            raise r.error(key, f"no source named {unknown[0]!r}")
    return UserConfig(
        name=name,
        password=password,
        password_hash=password_hash,
        read=read,
        upload=upload,
        gitlab_token=r.token("gitlab_token"),
    )


def load(path: str | Path) -> Config:
    """Read and validate a configuration file. Raises ConfigError with a one-line message."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    root = _Reader(path, document, "")
    root.check_keys(
        {"server", "cache", "gitlab", "sources", "auth", "users", "upload", "policy", "audit"}
        | {"storage", "cluster", "views"}
    )
    sources = tuple(_source(r) for r in root.tables_at("sources"))
    names = [s.name for s in sources]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise root.error("sources", f"two sources are named {duplicate!r}")
    auth_r = root.table_at("auth")
    auth_r.check_keys(
        {"anonymous_read", "passthrough", "realm", "failed_logins_per_minute", "operators"}
        | {"admins"}
    )
    users = tuple(_user(r, set(names)) for r in root.tables_at("users"))
    operators = auth_r.strings("operators", frozenset())
    admins = auth_r.strings("admins", frozenset())
    for key, named in (("operators", operators), ("admins", admins)):
        unknown = sorted(named - {u.name for u in users})
        if unknown:
            raise auth_r.error(key, f"no [[users]] entry named {unknown[0]!r}")
    views = tuple(_view(r, names) for r in root.tables_at("views"))
    twice = next((v.name for v in views if [w.name for w in views].count(v.name) > 1), None)
    if twice:
        raise root.error("views", f"two views are named {twice!r}")
    realm = auth_r.string("realm", "gitlab-pypi-proxy")
    if not _REALM.fullmatch(realm):
        raise auth_r.error(
            "realm",
            'expected 1 to 200 ASCII letters, digits, spaces or punctuation other than " and \\ '
            "(it is sent in the WWW-Authenticate header)",
        )
    auth = AuthConfig(
        anonymous_read=auth_r.boolean("anonymous_read", True),
        passthrough=auth_r.boolean("passthrough", False),
        realm=realm,
        failed_logins_per_minute=auth_r.integer(
            "failed_logins_per_minute", 30, minimum=1, maximum=_MILLION
        ),
        operators=operators,
        admins=admins,
    )
    upload_r = root.table_at("upload")
    upload_r.check_keys({"default_source", "max_size"})
    default = upload_r.string("default_source")
    if default is not None:
        target = next((s for s in sources if s.name == default), None)
        if target is not None and target.kind != "gitlab_project":
            raise upload_r.error(
                "default_source",
                f"{default!r} is a {target.kind} source: GitLab takes uploads into a project "
                "only; name a gitlab_project source",
            )
        if target is None:
            raise upload_r.error("default_source", f"no gitlab_project source named {default!r}")
    cache = _cache(root.table_at("cache"), path.parent)
    guard = rules.parse(
        root.table_at("policy").table,
        [r.table for r in root.tables_at("sources")],
        root.table_at("audit").table,
        base=path.parent,
        cache_directory=cache.directory,
        error=lambda key, message: ConfigError(f"{path}: {key}: {message}"),
    )
    server_r, storage = root.table_at("server"), _storage(root.table_at("storage"))
    server = _server(server_r)
    if server.accel_redirect and storage.backend != "local":
        raise server_r.error(
            "accel_redirect", 'only with [storage] backend = "local": nginx reads the cached files'
        )
    return Config(
        path=path,
        server=server,
        cache=cache,
        gitlab=_gitlab(root.table_at("gitlab"), any(s.is_gitlab for s in sources)),
        sources=sources,
        auth=auth,
        users=users,
        upload=UploadConfig(
            default_source=default, max_size=upload_r.size("max_size", "3GiB", minimum=1024)
        ),
        guard=guard,
        storage=storage,
        cluster=_cluster(root.table_at("cluster")),
        views=views,
    )
