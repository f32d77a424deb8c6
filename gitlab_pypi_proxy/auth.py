"""Who is asking: HTTP basic credentials → Identity (readable and uploadable sources, and the
credentials the proxy sends to GitLab on that identity's behalf).

Each credential pays the slow password hash once per few minutes: verified credentials are
remembered in memory under an HMAC of the password with a per-process key, never the password;
concurrent checks of one credential share one hash. Hashes run in a small pool of their own, so
a flood of wrong passwords never takes the threads that serve files and pages, and a client
whose credentials keep failing is refused (429) before it costs a hash.

Neither the time nor the answer of a refusal tells which user names exist: a name that is no
user pays the hash too (against a dummy hash), and with passthrough a proxy user's name with a
wrong password goes to GitLab like any other credentials, with a password GitLab refuses (never
the one given). Passthrough credentials (no proxy user) are shown only the sources GitLab lets
them read; that verdict is remembered the same way, briefly.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx2

from gitlab_pypi_proxy.aio import SingleFlight, TTLMemo
from gitlab_pypi_proxy.config import AuthConfig, UserConfig
from gitlab_pypi_proxy.errors import CannotVerify, SourceUnavailable, TooManyFailures, Unauthorized
from gitlab_pypi_proxy.login_limit import LoginLimit
from gitlab_pypi_proxy.passwords import dummy_hash, verify_hash, verify_plain

log = logging.getLogger("proxy.auth")

VERIFIED_SECONDS = 300.0
PASSTHROUGH_SECONDS = 60.0
_MEMO_ENTRIES = 10_000
TOKEN_USER = "__token__"  # twine's convention: the password alone says who it is
# GitLab ignores the basic-auth user name except "gitlab-ci-token"; this one is only a label.
GITLAB_USER = "gitlab-pypi-proxy"
JOB_TOKEN_USER = "gitlab-ci-token"  # GitLab's name for a CI job token
_UNKNOWN = object()  # credentials not checked lately
HASH_THREADS = 2  # concurrent password hashes per process, each about 32 MiB and a core


@dataclass(frozen=True)
class Identity:
    user: str | None  # the proxy user; None for anonymous and passthrough callers
    readable: frozenset[str] | None  # source names; None means every source
    uploadable: frozenset[str]
    upstream: httpx2.Auth | None  # what goes to GitLab for this caller's uploads
    passthrough: bool = False

    @property
    def anonymous(self) -> bool:
        return self.user is None and not self.passthrough


ANONYMOUS = Identity(user=None, readable=None, uploadable=frozenset(), upstream=None)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header, or None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        user, colon, password = decoded.partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


# A source's probe: may these credentials read it? Raises SourceUnavailable.
Probe = Callable[[httpx2.Auth], Awaitable[bool]]


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        users: Sequence[UserConfig],
        upload_targets: frozenset[str],
        probes: Mapping[str, Probe],
        public: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        self.users = {u.name: u for u in users}
        self.upload_targets = upload_targets  # the gitlab_project sources
        self.probes = dict(probes)  # source name → probe, for passthrough reads
        self.public = public  # url sources: readable by any caller GitLab accepts
        self._key = secrets.token_bytes(32)
        # checked for names that are no user: at the cost of the configured hashes
        hashes = [u.password_hash for u in users if u.password_hash]
        self._dummy_hash = dummy_hash(hashes[0] if hashes else None)
        # what a proxy user's name with a wrong password is tried with at GitLab: refused there
        self._decoy = httpx2.BasicAuth(GITLAB_USER, secrets.token_urlsafe(24))
        self._hashing = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="password-hash")
        self.failures = LoginLimit(config.failed_logins_per_minute)
        # what credentials proved lately: a proxy user's name (or None: no user)
        self._verified: TTLMemo[tuple[str, str], str | None] = TTLMemo(
            _MEMO_ENTRIES, VERIFIED_SECONDS
        )
        self._checks: SingleFlight[tuple[str, str], UserConfig | None] = SingleFlight()
        # which sources passthrough credentials may read, as GitLab said lately
        self._readable: TTLMemo[str, frozenset[str]] = TTLMemo(_MEMO_ENTRIES, PASSTHROUGH_SECONDS)
        self._flights: SingleFlight[str, frozenset[str]] = SingleFlight()

    def close(self) -> None:
        self._hashing.shutdown(wait=False, cancel_futures=True)

    def _fingerprint(self, *parts: str) -> str:
        return hmac.new(self._key, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    async def identify(
        self, authorization: str | None, *, upload: bool = False, client: str | None = None
    ) -> Identity:
        """The identity behind an Authorization header from the client at address `client`.

        Raises Unauthorized, TooManyFailures or CannotVerify.
        """
        credentials = basic_credentials(authorization)
        if credentials is None:
            if authorization or upload or not self.config.anonymous_read:
                raise Unauthorized
            return ANONYMOUS
        name, password = credentials
        fingerprint = self._fingerprint(name, password)
        known = self._known(name, password, fingerprint, upload)
        if known is not None:
            return known  # accepted lately: also for a client refused for its failures
        retry_after = self.failures.retry_after(client)
        if retry_after:
            raise TooManyFailures(retry_after)
        try:
            return await self._identify(name, password, fingerprint, upload)
        except Unauthorized:
            self.failures.failed(client)
            raise

    def _known(self, name: str, password: str, fingerprint: str, upload: bool) -> Identity | None:
        """The identity of credentials accepted lately, from memory alone; else None."""
        verified = self._verified.get((name, fingerprint), _UNKNOWN)
        if verified is _UNKNOWN:
            return None
        if verified is not None:
            user = self.users.get(verified)
            return self._user_identity(user) if user else None
        readable = self._readable.get(fingerprint)
        if upload or not readable or name in self.users:
            return None
        return self._passthrough_identity(readable, httpx2.BasicAuth(name, password))

    async def _identify(self, name: str, password: str, fingerprint: str, upload: bool) -> Identity:
        user = await self._user(name, password, fingerprint)
        if user is not None:
            return self._user_identity(user)
        if not self.config.passthrough or not password:
            raise Unauthorized
        # A proxy user's name takes the path of any other name, with credentials GitLab refuses.
        auth = self._decoy if name in self.users else httpx2.BasicAuth(name, password)
        if upload:
            return Identity(None, frozenset(), self.upload_targets, auth, passthrough=True)
        readable = await self._passthrough_readable(fingerprint, auth)
        if not readable or name in self.users:
            raise Unauthorized
        return self._passthrough_identity(readable, auth)

    def _passthrough_identity(self, readable: frozenset[str], auth: httpx2.Auth) -> Identity:
        return Identity(None, readable | self.public, frozenset(), auth, passthrough=True)

    def _user_identity(self, user: UserConfig) -> Identity:
        readable = None if "*" in user.read else user.read
        uploadable = self.upload_targets if "*" in user.upload else user.upload
        upstream = httpx2.BasicAuth(GITLAB_USER, user.gitlab_token) if user.gitlab_token else None
        return Identity(user.name, readable, uploadable & self.upload_targets, upstream)

    async def _user(self, name: str, password: str, fingerprint: str) -> UserConfig | None:
        """The proxy user these credentials prove, or None; one check for concurrent callers."""
        key = (name, fingerprint)
        known = self._verified.get(key, _UNKNOWN)
        if known is not _UNKNOWN:
            return self.users.get(known) if known else None
        return await self._checks.run(key, lambda: self._check(name, password, key))

    async def _check(self, name: str, password: str, key: tuple[str, str]) -> UserConfig | None:
        if name == TOKEN_USER:
            candidates = list(self.users.values())
        elif name in self.users:
            candidates = [self.users[name]]
        else:
            candidates = []
        found, hashed = None, False
        for user in candidates:
            if user.password is not None:
                matched = verify_plain(password, user.password)
            else:
                matched = await self._hash(password, user.password_hash or "")
                hashed = True
            if matched and found is None:
                found = user
        # An unknown name (or plain passwords only) costs what a hashed password costs. GitLab's
        # job-token name, when it is no user, tells nothing: CI jobs through passthrough skip it.
        skip = self.config.passthrough and name == JOB_TOKEN_USER and name not in self.users
        if not hashed and not skip:
            await self._hash(password, self._dummy_hash)
        self._verified.set(key, found.name if found else None)
        return found

    async def _hash(self, password: str, encoded: str) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hashing, verify_hash, password, encoded)

    async def _passthrough_readable(self, fingerprint: str, auth: httpx2.Auth) -> frozenset[str]:
        known = self._readable.get(fingerprint)
        if known is not None:
            return known
        return await self._flights.run(fingerprint, lambda: self._ask_gitlab(fingerprint, auth))

    async def _ask_gitlab(self, fingerprint: str, auth: httpx2.Auth) -> frozenset[str]:
        names = list(self.probes)
        answers = await asyncio.gather(
            *(self.probes[n](auth) for n in names), return_exceptions=True
        )
        readable, failures = set(), []
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, SourceUnavailable):
                failures.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer:
                readable.add(name)
        if failures:
            if not readable:
                raise CannotVerify(failures)
            log.warning("passthrough credentials checked on part of the sources only")
            return frozenset(readable)  # not remembered: ask again once GitLab is back
        verdict = frozenset(readable)
        self._readable.set(fingerprint, verdict)
        return verdict
