"""Every failure a client can be told about: one exception type per kind, each carrying its HTTP
status and a one-line reason (and the headers it needs: Retry-After, WWW-Authenticate).

Plain exceptions, no web framework: the stores and sources raise them without importing one.
Routes and the layers below them raise these; gitlab_pypi_proxy.http.error_responses renders them
(plain text, one line, credentials in URLs masked, never a traceback).

The failures of upstreams (`SourceUnavailable`, `RateLimited`, `Refused`, `FileNotFoundUpstream`)
are raised by the transport and the sources; the index turns them into what the client sees
(`Unavailable`, `FailClosed`, `NotFound`), but any that reaches the handler still renders right.
"""

import math
from collections.abc import Mapping, Sequence


class ProxyError(Exception):
    """A failure with the status it is answered with. The message is the one-line reason."""

    status = 500

    def __init__(self, reason: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self._headers = dict(headers or {})

    def headers(self) -> dict[str, str]:
        return self._headers


# --- the client's mistakes ------------------------------------------------------------------


class BadRequest(ProxyError):
    """A request that cannot be answered as it is: a bad name, sha256, form or upload."""

    status = 400


class Unauthorized(ProxyError):
    """Missing or wrong credentials. With a realm, the answer challenges for Basic credentials."""

    status = 401

    def __init__(self, reason: str = "missing or wrong credentials", realm: str | None = None):
        challenge = {"www-authenticate": f'Basic realm="{realm}"'} if realm else None
        super().__init__(reason, challenge)


class Forbidden(ProxyError):
    """Known credentials that may not do this."""

    status = 403


class NotFound(ProxyError):
    """No readable source has it (a project, a file, its metadata, an upload target)."""

    status = 404


class NotAcceptable(ProxyError):
    """No media type the client accepts."""

    status = 406


class Conflict(ProxyError):
    """The proxy's state does not allow it: the file is there already (an upload that GitLab
    refuses as taken), a refresh while offline, a yank past what the yanks may hold."""

    status = 409


class TooLarge(ProxyError):
    """A request body larger than the configured limit."""

    status = 413


class TooManyFailures(ProxyError):
    """This client's credentials failed too often lately: refused before a hash is spent."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        reason = f"too many failed logins from this address: retry in {retry_after} s"
        super().__init__(reason, {"retry-after": str(retry_after)})
        self.retry_after = retry_after


class UploadRefused(ProxyError):
    """GitLab refused an upload for a reason the client must fix: its own status (400, 403, 404,
    413) and message."""

    def __init__(self, status: int, reason: str) -> None:
        if not 400 <= status < 500:
            raise ValueError(f"an upload refusal is a 4xx, not {status}")
        super().__init__(reason)
        self.status = status


# --- what upstreams say ---------------------------------------------------------------------


class SourceUnavailable(ProxyError):
    """The source could not be asked (connection error, timeout, 5xx). Never holds a secret.

    `reported`: the transport told the source's health of this failure (it logs the outage)."""

    def __init__(
        self, source: str, reason: str, *, timeout: bool = False, reported: bool = False
    ) -> None:
        super().__init__(f"upstream {source} unavailable: {reason}")
        self.source, self.reason, self.timeout = source, reason, timeout
        self.reported = reported
        self.status = 504 if timeout else 502


class RateLimited(SourceUnavailable):
    """No request may go to the source now: it answered 429 (its rate limit) and its Retry-After
    has not passed, or the proxy's own request budget for it is spent."""

    def __init__(self, source: str, reason: str, retry_after: float) -> None:
        super().__init__(source, reason)
        self.retry_after = retry_after
        self.status = 503
        self._headers = {"retry-after": str(math.ceil(retry_after))}


class Refused(ProxyError):
    """The source answered, but would not give what was asked (401, 403, 404, ...): a token
    without the scope or the access it needs, or a wrong project. Never holds a secret."""

    status = 502

    def __init__(self, source: str, what: str, status: int, hint: str = "") -> None:
        super().__init__(f"source {source}: {what} answered HTTP {status}{hint}")
        self.source, self.upstream_status = source, status


class FileNotFoundUpstream(ProxyError):
    """The source does not have that file (or refuses to show it)."""

    status = 404


class HashMismatch(ProxyError):
    """The upstream's bytes do not hash to the digest the file is addressed by."""

    status = 502


class NotAsListed(HashMismatch):
    """A source's bytes for a file do not hash to the sha256 its listing gives (a forged
    listing, or a broken upload): nothing kept under that digest is served for it."""

    def __init__(self, source: str, filename: str) -> None:
        super().__init__(f"source {source}: {filename} sha256 does not match its listing")
        self.source, self.filename = source, filename


# --- what the client is told when upstreams fail --------------------------------------------


class Unavailable(ProxyError):
    """Sources that might have the answer could not be reached and nothing is cached: 502, or
    504 when every one timed out, or 503 with Retry-After when every one is rate-limited."""

    def __init__(self, failures: Sequence[SourceUnavailable], reason: str | None = None) -> None:
        self.failures = list(failures)
        self.timeout = all(f.timeout for f in failures)
        limits = [f.retry_after for f in failures if isinstance(f, RateLimited)]
        self.retry_after = max(limits) if limits and len(limits) == len(failures) else None
        if self.retry_after is not None:  # a rate limit: not now
            status, headers = 503, {"retry-after": str(math.ceil(self.retry_after))}
        else:
            status, headers = (504 if self.timeout else 502), None
        super().__init__(reason or "; ".join(str(f) for f in failures), headers)
        self.status = status


class FailClosed(Unavailable):
    """A GitLab source that may own the name cannot answer: the public index is not asked."""

    def __init__(self, name: str, failures: Sequence[SourceUnavailable]) -> None:
        owners = ", ".join(f.source for f in failures)
        super().__init__(
            failures,
            f"source {owners} cannot be reached and may own {name}; not asking the public index "
            f"for it (list it in allow_public to permit that): "
            + "; ".join(str(f) for f in failures),
        )
        if self.retry_after is None:
            self.status = 503


class Offline(ProxyError):
    """The proxy is offline and holds no copy of what was asked for: a definite answer (404, at
    once), since no retry can help while it stays offline; clients then say "not found" instead
    of retrying a 503."""

    status = 404
    HINT = "; fill the cache while online (gitlab-pypi-proxy prefetch) to have it offline"

    def __init__(self, reason: str) -> None:
        super().__init__(reason + self.HINT)


class CannotVerify(ProxyError):
    """Passthrough credentials could not be checked because GitLab is unreachable."""

    def __init__(self, failures: Sequence[SourceUnavailable]) -> None:
        super().__init__(
            "cannot check these credentials with GitLab: " + "; ".join(str(f) for f in failures)
        )
        self.timeout = all(f.timeout for f in failures)
        self.status = 504 if self.timeout else 502


class UpstreamFailed(ProxyError):
    """An upstream failed in a way the client cannot fix: a download that broke off, an answer
    the proxy cannot use. 504 when it timed out."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.status = 504 if timeout else 502


class ShuttingDown(ProxyError):
    """The proxy is stopping before this request finished."""

    status = 503
