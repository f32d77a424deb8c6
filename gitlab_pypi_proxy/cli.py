"""The command line. A bad config exits 2 with one line naming file and key, never a traceback.

Every command that reads a configuration takes it from `--config` or, without one, from the
environment variable GITLAB_PYPI_PROXY_CONFIG (what a container image sets once for every
command). `serve` also hands the resolved path to its workers in that same variable.
"""

import argparse
import contextlib
import os
import re
import shutil
import sqlite3
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from gitlab_pypi_proxy import __version__
from gitlab_pypi_proxy.config import Config, ConfigError, load
from gitlab_pypi_proxy.redact import mask_userinfo
from gitlab_pypi_proxy.sizes import human

if TYPE_CHECKING:
    from gitlab_pypi_proxy.storage.stores import Leftovers, Stores

CONFIG_ENV = "GITLAB_PYPI_PROXY_CONFIG"
CONFIG_HELP = f"TOML configuration file (default: ${CONFIG_ENV})"
OFFLINE_ENV = "GITLAB_PYPI_PROXY_OFFLINE"
DESCRIPTION = (
    "A PyPI proxy and offline cache in front of GitLab's package registry: one index URL for "
    "pip, uv, poetry and pdm, and an upload URL for twine and uv publish."
)
EPILOG = (
    "Try it without a GitLab: `gitlab-pypi-proxy demo`. "
    "Check a configuration with `gitlab-pypi-proxy check-config --config FILE`, then run "
    "`gitlab-pypi-proxy serve --config FILE`; without --config, every command reads the file "
    f"that ${CONFIG_ENV} names. Each command has its own --help."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitlab-pypi-proxy", description=DESCRIPTION, epilog=EPILOG
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )
    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help=CONFIG_HELP)
    serve.add_argument("--host", help="address to listen on (default: [server] host)")
    serve.add_argument(
        "--port", type=_port_argument, help="port to listen on (default: [server] port)"
    )
    serve.add_argument(
        "--workers",
        type=_workers_argument,
        help='worker processes, or "auto" (default: [server] workers)',
    )
    serve.add_argument("--offline", action="store_true", help="never contact an upstream")
    serve.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (default: [server] log_format)"
    )
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("--config", help=CONFIG_HELP)
    cache = commands.add_parser("cache", help="inspect or check the cache").add_subparsers(
        dest="action", required=True
    )
    for action, text in (("stats", "entries and bytes"), ("verify", "rehash every file")):
        cache.add_parser(action, help=text).add_argument("--config", help=CONFIG_HELP)
    for action, text in (("export", "write a bundle"), ("import", "add a bundle, verified")):
        bundle = cache.add_parser(action, help=text)
        bundle.add_argument("bundle", help="the bundle, a .tar file")
        bundle.add_argument("--config", help=CONFIG_HELP)
    _prefetch_arguments(commands.add_parser("prefetch", help="fill the cache for offline builds"))
    demo = commands.add_parser(
        "demo", help="try the proxy without a GitLab: a GitLab double with sample packages"
    )
    demo.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    demo.add_argument("--directory", help="keep the demo's config and cache here (default: temp)")
    audit = commands.add_parser("audit", help="who received which files, when (the [audit] trail)")
    audit.add_argument("--config", help=CONFIG_HELP)
    audit.add_argument("--package", help="NAME or NAME==VERSION")
    audit.add_argument("--sha256", help="the sha256 of one file")
    commands.add_parser(
        "hash-password",
        help="print a password_hash for [[users]] (the password is read from stdin or a prompt)",
    )
    return parser


def _prefetch_arguments(prefetch: argparse.ArgumentParser) -> None:
    prefetch.add_argument("--config", help=CONFIG_HELP)
    add = prefetch.add_argument
    add("-r", "--requirements", action="append", default=[], help="requirements file (hashes)")
    add(
        "--lock",
        action="append",
        default=[],
        help="uv.lock, pylock.toml, poetry.lock, pdm.lock or Pipfile.lock (by name or content)",
    )
    add("--package", action="append", default=[], help="NAME or NAME==VERSION: all its files")
    add("--source", action="append", default=[], help="every package of this GitLab source")
    add("--latest", type=int, help="with --source: only the N newest versions of each name")
    add("--jobs", type=int, default=4, help="files fetched at once (default 4)")


def _workers_argument(text: str) -> int | str:
    from gitlab_pypi_proxy.workers import MAX_WORKERS

    if text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f'expected "auto" or a number from 1 to {MAX_WORKERS}')
    return int(text)


def _port_argument(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535")
    return int(text)


def hash_password_command() -> int:
    """Never from argv: a password there would land in shell history and `ps`."""
    import getpass

    from gitlab_pypi_proxy.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("gitlab-pypi-proxy: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("gitlab-pypi-proxy: empty password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def config_path(argument: str | None) -> str:
    """`--config`, else the environment's GITLAB_PYPI_PROXY_CONFIG."""
    path = argument or os.environ.get(CONFIG_ENV, "").strip()
    if not path:
        raise ConfigError(f"no configuration: give --config FILE or set {CONFIG_ENV}")
    return path


def load_config(path: str, *, offline: bool = False) -> Config:
    config = load(path)
    if offline:
        config = replace(config, cache=replace(config.cache, offline=True))
    return config


def app_factory():  # type: ignore[no-untyped-def]
    """The ASGI app for uvicorn's worker processes, configured from the environment, once what
    the worker builds on uvicorn's internals is installed (uvicorn loads the app before it
    accepts any connection)."""
    from gitlab_pypi_proxy.http.app import create_app
    from gitlab_pypi_proxy.internals import install_in_worker

    config = load_config(os.environ[CONFIG_ENV], offline=bool(os.environ.get(OFFLINE_ENV)))
    install_in_worker(config.server.header_timeout)
    return create_app(config)


def _private() -> None:
    """Cached packages and index pages are no other local user's business: everything this
    process creates is its user's only (directories 0700, files 0600), whatever the umask."""
    os.umask(os.umask(0o077) | 0o077)


def _close_cache_directory(directory: Path) -> None:
    """A cache made under a looser umask (0755, 0644): closing its top directory keeps other
    users out of everything below. Not a directory shared with others (sticky, like /tmp)."""
    mode = directory.stat()
    if mode.st_uid == os.geteuid() and mode.st_mode & 0o077 and not mode.st_mode & stat.S_ISVTX:
        with contextlib.suppress(OSError):  # a mount that keeps its modes: nothing more to do
            directory.chmod(0o700)


def _check_cache_directory(config: Config) -> None:
    directory = config.cache.directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _close_cache_directory(directory)
        probe = directory / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{config.path}: cache.directory: {directory} is not writable ({exc.strerror})"
        ) from None


def _describe(config: Config) -> str:
    from gitlab_pypi_proxy.workers import workers

    lines = [f"config {config.path}: OK"]
    server = config.server
    count = workers(server.workers)
    lines.append(
        f"server http://{server.host}:{server.port}{server.base_path}/, "
        + (f"workers auto ({count} here)" if server.workers == "auto" else f"workers {count}")
    )
    if config.gitlab.url:
        auth = "token set" if config.gitlab.token else "no token (anonymous)"
        lines.append(f"gitlab {mask_userinfo(config.gitlab.url)}, {auth}")
    for number, source in enumerate(config.sources, 1):
        target = mask_userinfo(source.target)
        hosts = f" (files also from {', '.join(source.file_hosts)})" if source.file_hosts else ""
        lines.append(f"source {number}: {source.name} = {source.kind} {target}{hosts}")
    auth = config.auth
    reads = "anonymous reads" if auth.anonymous_read else "reads need credentials"
    lines.append(
        f"auth: {reads}, passthrough {'on' if auth.passthrough else 'off'}, "
        f"{len(config.users)} users, uploads default to {config.upload.default_source or 'none'}"
        f" (at most {human(config.upload.max_size)} each)"
    )
    cache = config.cache
    lines.append(
        f"cache {cache.directory} (max {human(cache.max_size)}, index_ttl {cache.index_ttl} s, "
        f"pages up to {human(cache.max_page_size)}{', offline' if cache.offline else ''})"
    )
    storage = config.storage
    if storage.backend == "s3":
        where = mask_userinfo(storage.endpoint_url or "AWS S3")
        keys = "access key set" if storage.access_key_id else "credentials from the environment"
        redirect = ", downloads redirected to presigned URLs" if storage.redirect else ""
        lines.append(
            f"storage: s3 bucket {storage.bucket!r} prefix {storage.prefix!r} at {where} "
            f"({storage.region}, {keys}{redirect})"
        )
    if config.cluster.redis_url:
        lines.append(f"cluster: redis {mask_userinfo(config.cluster.redis_url)}")
    return "\n".join(lines)


def check_config_command(config: Config) -> int:
    """The configuration as the proxy reads it, then each problem on a line of its own: exit 2
    when one of them means nothing can work."""
    from gitlab_pypi_proxy.config_checks import problems

    found = problems(config)
    if not any(p.error for p in found):
        print(_describe(config))
    for problem in found:
        print(f"gitlab-pypi-proxy: {mask_userinfo(str(problem))}", file=sys.stderr)
    return 2 if any(p.error for p in found) else 0


def open_stores(config: Config, *, count_hits: bool = True) -> "Stores":
    """Open the caches, or fail with one line saying why (read-only, corrupt, ...)."""
    from gitlab_pypi_proxy.storage.stores import Stores

    _check_cache_directory(config)
    try:
        return Stores.open(config, count_hits=count_hits)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"{config.path}: cache.directory: cannot open the cache in "
            f"{config.cache.directory}: {exc}"
        ) from None


def _orphans_line(orphans: "Leftovers") -> str:
    return (
        f"removed {orphans.parts} partial downloads ({orphans.bytes} bytes) and {orphans.locks}"
        " lock files left by stopped processes"
    )


def _log_problems(config: Config) -> None:
    """What check-config would say, as warnings: `serve` still starts (a health check waits)."""
    import logging

    from gitlab_pypi_proxy.config_checks import problems

    for problem in problems(config):
        logging.getLogger("proxy.cli").warning("%s", problem)


def _raise_open_files_limit() -> None:
    """Up to the hard limit, for this process and the workers it starts (they inherit it)."""
    import logging

    from gitlab_pypi_proxy.descriptors import raise_soft_limit

    before, after = raise_soft_limit()
    if after != before:
        logging.getLogger("proxy.cli").info(
            "open files limit (RLIMIT_NOFILE) raised from %d to %d", before, after
        )


def _clean_orphans(config: Config) -> None:
    """What workers killed mid-download left (SIGKILL, a grace time run out): gone at start."""
    import logging

    from gitlab_pypi_proxy.storage.stores import Stores

    log = logging.getLogger("proxy.cli")
    try:
        stores = Stores.open(config, count_hits=False)
        try:
            orphans = stores.clean()
        finally:
            stores.close()
    except (OSError, sqlite3.Error) as exc:  # a read-only cache: serving matters more
        log.warning("leftovers of stopped downloads not removed: %s", exc)
        return
    if orphans.parts or orphans.locks:
        log.warning(_orphans_line(orphans))


def _check_shared(config: Config) -> None:
    """The bucket exists and takes writes, Redis answers: says plainly which is missing. One
    that is missing or refuses the credentials stops the start (a configuration to fix); one
    that cannot be reached now is an outage: the replica starts and serves without it."""
    import logging

    log = logging.getLogger("proxy.cli")
    stores = open_stores(config, count_hits=False)
    try:
        problems = [(part.kind, part.problem()) for part in stores.shared]
    finally:
        stores.close()
    for kind, problem in problems:
        if problem is None:
            log.info("%s answers", "S3 bucket" if kind == "s3" else "Redis")
            continue
        fatal, message = problem
        if fatal:
            key = "storage.bucket" if kind == "s3" else "cluster.redis_url"
            raise ConfigError(f"{config.path}: {key}: {message}")
        log.warning("%s: starting without it", message)


def cache_command(config: Config, args: argparse.Namespace) -> int:
    from gitlab_pypi_proxy.offline import bundle
    from gitlab_pypi_proxy.offline.stats import stats_lines
    from gitlab_pypi_proxy.offline.verify import verify

    action = args.action
    stores = open_stores(config, count_hits=False)
    try:
        if action == "stats":
            print("\n".join(stats_lines(stores.pages, stores.blobs)))
            return 0
        try:
            if action == "export":
                count, records = bundle.export(stores, Path(args.bundle))
                print(f"exported {count} files and {records} index records to {args.bundle}")
                return 0
            if action == "import":
                report = bundle.import_bundle(stores, Path(args.bundle))
                print(
                    f"imported {report.files} files ({report.bytes} bytes), "
                    f"{report.pages} index records"
                )
                if report.not_kept:
                    print(
                        f"not kept: {len(report.not_kept)} files ({report.not_kept_bytes} bytes)"
                        f": cache.max_size ({config.cache.max_size} bytes) is too small"
                    )
                    for line in report.not_kept:
                        print(f"  {line}")
                for line in report.bad:
                    print(f"bad: {line}")
                return 1 if report.bad or report.not_kept else 0
        except bundle.BundleError as exc:
            raise ConfigError(str(exc)) from None
        print(_orphans_line(stores.clean()))
        checked, dropped = verify(stores.blobs)
        for sha256 in dropped:
            print(f"corrupt, dropped: {sha256}")
        print(f"verified {checked} files, dropped {len(dropped)}")
        return 1 if dropped else 0
    finally:
        stores.close()


def audit_command(config: Config, args: argparse.Namespace) -> int:
    """Every delivery of the package (or file) in the trail, oldest first, one line each."""
    from gitlab_pypi_proxy.policy import audit_trail

    path = config.guard.audit.path
    if path is None:
        raise ConfigError(f"{config.path}: audit.path: the audit trail is off")
    if not args.package and not args.sha256:
        raise ConfigError("audit: give --package NAME[==VERSION] or --sha256 DIGEST")
    package = version = None
    if args.package:
        try:
            package, version = audit_trail.parse_package(args.package)
        except ValueError as exc:
            raise ConfigError(f"audit: --package: {exc}") from None
    sha256 = args.sha256.strip().lower() if args.sha256 else None
    if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ConfigError("audit: --sha256: expected 64 hex digits")
    result = audit_trail.query(path, package=package, version=version, sha256=sha256)
    for delivery in result.deliveries:
        print(delivery.describe())
    what = args.package or sha256
    print(f"{len(result.deliveries)} deliveries of {what} in {len(result.files)} files of {path}")
    if result.unreadable_lines:
        print(f"{result.unreadable_lines} lines could not be read", file=sys.stderr)
    return 0


def prefetch_command(config: Config, args: argparse.Namespace) -> int:
    import asyncio

    from gitlab_pypi_proxy.offline import prefetch
    from gitlab_pypi_proxy.offline.progress import for_terminal

    if config.cache.offline:
        raise ConfigError(f"{config.path}: cache.offline: prefetch needs the upstreams")
    open_stores(config).close()  # a cache directory it cannot use: one line, exit 2
    inputs = prefetch.Inputs(args.requirements, args.lock, args.package, args.source, args.latest)
    if not (inputs.requirements or inputs.locks or inputs.packages or inputs.sources):
        raise ConfigError("prefetch: nothing to do: give -r, --lock, --package or --source")
    if (args.latest is not None and args.latest < 1) or args.jobs < 1:
        raise ConfigError("prefetch: --latest and --jobs must be at least 1")
    try:
        report = asyncio.run(prefetch.run(config, inputs, args.jobs, for_terminal()))
    except prefetch.LockFileError as exc:
        raise ConfigError(str(exc)) from None
    except KeyboardInterrupt:
        print("prefetch interrupted; run it again to fetch the rest", file=sys.stderr)
        return 130
    print("\n".join(report.summary()))
    return 0 if report.complete else 1


def _runtime_directory(config: Config) -> Path:
    """Where the workers share metrics and source health (gitlab_pypi_proxy.runtime_dir), never on
    the cache disk. Must run before anything imports prometheus_client (gitlab_pypi_proxy.metrics)
    in this process."""
    from gitlab_pypi_proxy import runtime_dir

    for stale in ("metrics", "health"):  # where earlier versions kept them
        shutil.rmtree(config.cache.directory / stale, ignore_errors=True)
    try:
        return runtime_dir.create()
    except OSError as exc:
        raise ConfigError(f"cannot make a runtime directory: {exc}") from None


def serve(config: Config, args: argparse.Namespace) -> None:
    from gitlab_pypi_proxy.supervisor import remove_on_stop

    _check_cache_directory(config)
    runtime = _runtime_directory(config)
    remove_on_stop(runtime)
    try:
        _serve(config, args, runtime)
    finally:  # a check that failed: the supervisor, once it runs, removes it itself
        shutil.rmtree(runtime, ignore_errors=True)


def _check_vulnerabilities(config: Config) -> None:
    """An OSV export that is no zip at all: one line and exit 2, before any worker starts (each
    worker reads it in full at start, and on SIGHUP keeps what it had if it cannot)."""
    import zipfile

    path = config.guard.policy.vulnerabilities
    if path is None:
        return
    try:
        zipfile.ZipFile(path).close()
    except (OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{config.path}: policy.vulnerabilities: {path} is not a readable zip file: {exc}"
        ) from None


def _serve(config: Config, args: argparse.Namespace, runtime: Path) -> None:
    import logging.config

    from gitlab_pypi_proxy import supervisor
    from gitlab_pypi_proxy.allocator import ENVIRONMENT
    from gitlab_pypi_proxy.log_format import logging_config
    from gitlab_pypi_proxy.workers import workers

    open_stores(config).close()
    _check_vulnerabilities(config)
    os.environ[CONFIG_ENV] = str(Path(config.path).resolve())
    # how every process takes memory from the C library (gitlab_pypi_proxy.allocator); read
    # when the supervisor and each worker start
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if config.cache.offline:
        os.environ[OFFLINE_ENV] = "1"
    server = config.server
    log_config = logging_config(server.log_level, args.log_format or server.log_format)
    logging.config.dictConfig(log_config)
    _raise_open_files_limit()
    _log_problems(config)
    _check_shared(config)
    _clean_orphans(config)
    supervisor.become(
        runtime,
        {
            "host": args.host or server.host,
            "port": args.port if args.port is not None else server.port,
            "workers": workers(args.workers or server.workers),
            "log_config": log_config,
            "log_level": server.log_level,
            "access_log": False,  # http/access_log.py writes one line per request instead
            "proxy_headers": False,  # http/behind_proxy.py honours [server] trusted_proxies
            "server_header": False,
            "ws": "none",  # no websocket routes: no websockets library in every worker
            # a small answer's headers and body in one system call
            "http": "gitlab_pypi_proxy.internals.server_protocol:CoalescingHttpTools",
            "timeout_graceful_shutdown": server.graceful_shutdown,
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _private()
    if args.command == "hash-password":
        return hash_password_command()
    if args.command == "demo":
        from gitlab_pypi_proxy.demo.run import run

        return run(args.port, Path(args.directory) if args.directory else None)
    try:
        config = load_config(config_path(args.config), offline=getattr(args, "offline", False))
        if args.command == "check-config":
            return check_config_command(config)
        if args.command == "cache":
            return cache_command(config, args)
        if args.command == "prefetch":
            return prefetch_command(config, args)
        if args.command == "audit":
            return audit_command(config, args)
        serve(config, args)
        return 0
    except ConfigError as exc:
        print(f"gitlab-pypi-proxy: {mask_userinfo(str(exc))}", file=sys.stderr)
        return 2
