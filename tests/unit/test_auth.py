"""Credentials → Identity: password hashes, __token__, the verified-credential memo, passthrough."""

import asyncio
import base64
import threading
from pathlib import Path

import httpx2
import pytest

from gitlab_pypi_proxy import auth as auth_module
from gitlab_pypi_proxy.auth import ANONYMOUS, Authenticator, basic_credentials
from gitlab_pypi_proxy.config import AuthConfig, ConfigError, UserConfig, load
from gitlab_pypi_proxy.errors import CannotVerify, SourceUnavailable, TooManyFailures, Unauthorized
from gitlab_pypi_proxy.login_limit import LoginLimit
from gitlab_pypi_proxy.passwords import (
    InvalidHash,
    dummy_hash,
    hash_password,
    parse_hash,
    verify_hash,
    verify_plain,
)
from tests.waiting import async_wait_until

TARGETS = frozenset({"platform", "tools"})


def header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def authenticator(
    *users: UserConfig,
    anonymous_read: bool = False,
    passthrough: bool = False,
    probes: dict | None = None,
    public: frozenset[str] = frozenset(),
) -> Authenticator:
    config = AuthConfig(anonymous_read=anonymous_read, passthrough=passthrough)
    return Authenticator(config, users, TARGETS, probes or {}, public)


def test_hash_format_is_self_describing_and_salted() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # a fresh salt each time
    n, r, p, salt, key = parse_hash(first)
    assert first.startswith(f"scrypt${n}${r}${p}$")
    assert n >= 2**14 and len(salt) == 16 and len(key) == 32
    assert verify_hash("s3cret", first)
    assert not verify_hash("s3cret ", first)


@pytest.mark.parametrize("bad", ["", "s3cret", "scrypt$3$8$1$AAAA$AAAA", "bcrypt$1$2$3$4$5"])
def test_a_hash_this_proxy_did_not_write_is_refused(bad: str) -> None:
    with pytest.raises(InvalidHash):
        parse_hash(bad)


def test_config_names_the_key_of_a_bad_password_hash(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text('[[users]]\nname = "ci"\npassword_hash = "plain-text"\n')
    with pytest.raises(ConfigError, match=r"users\[0\]\.password_hash: not a hash"):
        load(path)


def test_plain_passwords_compare_as_digests_so_length_does_not_matter() -> None:
    assert verify_plain("abc", "abc")
    assert not verify_plain("abc", "abcd")
    assert not verify_plain("", "abc")


@pytest.mark.parametrize(
    "value",
    [None, "", "Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()],
)
def test_headers_that_are_not_basic_credentials(value: str | None) -> None:
    assert basic_credentials(value) is None


def test_basic_credentials_keep_colons_in_the_password() -> None:
    assert basic_credentials(header("u", "a:b")) == ("u", "a:b")


async def test_anonymous_reads_only_when_allowed() -> None:
    assert await authenticator(anonymous_read=True).identify(None) is ANONYMOUS
    with pytest.raises(Unauthorized):
        await authenticator(anonymous_read=False).identify(None)
    with pytest.raises(Unauthorized):
        await authenticator(anonymous_read=True).identify(None, upload=True)


async def test_user_identity_translates_to_its_gitlab_token() -> None:
    ci = UserConfig("ci", password="pw", upload=frozenset({"*"}), gitlab_token="gldt-x")
    identity = await authenticator(ci).identify(header("ci", "pw"))
    assert identity.user == "ci" and identity.readable is None
    assert identity.uploadable == TARGETS
    request = next(identity.upstream.auth_flow(httpx2.Request("POST", "http://gitlab/")))
    user, _, password = (
        base64.b64decode(request.headers["authorization"][6:]).decode().partition(":")
    )
    assert password == "gldt-x" and user != "ci"


async def test_token_user_means_the_user_whose_password_it_is() -> None:
    users = (
        UserConfig("a", password="pw-a", read=frozenset({"tools"})),
        UserConfig("b", password_hash=hash_password("pw-b"), read=frozenset({"platform"})),
    )
    auth = authenticator(*users)
    assert (await auth.identify(header("__token__", "pw-b"))).user == "b"
    assert (await auth.identify(header("__token__", "pw-a"))).readable == {"tools"}
    with pytest.raises(Unauthorized):
        await auth.identify(header("__token__", "pw-c"))
    with pytest.raises(Unauthorized):
        await auth.identify(header("a", "pw-b"))  # b's password is not a's


async def test_the_slow_hash_runs_once_per_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(password: str, encoded: str) -> bool:
        calls.append(password)
        return verify_hash(password, encoded)

    monkeypatch.setattr(auth_module, "verify_hash", counting)
    auth = authenticator(UserConfig("ci", password_hash=hash_password("pw")))
    for _ in range(5):
        assert (await auth.identify(header("ci", "pw"))).user == "ci"
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await auth.identify(header("ci", "wrong"))
    assert calls == ["pw", "wrong"]
    memo = repr(auth._verified)
    assert "pw" not in memo.replace("'ci'", "")  # an HMAC of the password, never the password


def _count_kdf(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def counting(password: str, encoded: str) -> bool:
        calls.append((password, encoded))
        return verify_hash(password, encoded)

    monkeypatch.setattr(auth_module, "verify_hash", counting)
    return calls


async def test_an_unknown_name_pays_the_slow_hash_like_a_wrong_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_kdf(monkeypatch)
    stored = hash_password("pw")
    auth = authenticator(UserConfig("ci", password_hash=stored))
    with pytest.raises(Unauthorized):
        await auth.identify(header("ci", "wrong"))
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await auth.identify(header("nobody", "guess"))
    # once each, like any credential (the memo keeps the refusal of "nobody" too)
    assert [password for password, _ in calls] == ["wrong", "guess"]
    dummy = calls[1][1]
    assert dummy != stored
    assert parse_hash(dummy)[:3] == parse_hash(stored)[:3]  # the same cost as the real hash
    with pytest.raises(Unauthorized):
        await authenticator(UserConfig("ci", password_hash=stored)).identify(header("x", "y"))
    assert calls[2][1] != dummy  # a dummy of its own per process (made once at start)
    assert "guess" not in repr(auth._verified)


async def test_plain_password_users_pay_the_slow_hash_too(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_kdf(monkeypatch)
    auth = authenticator(UserConfig("ci", password="pw"))
    assert (await auth.identify(header("ci", "pw"))).user == "ci"
    with pytest.raises(Unauthorized):
        await auth.identify(header("nobody", "pw"))
    assert len(calls) == 2  # a fast check alone would tell "ci" exists


async def test_with_passthrough_an_unknown_name_goes_to_gitlab_without_the_slow_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_kdf(monkeypatch)

    async def yes(auth: httpx2.Auth) -> bool:
        return True

    auth = authenticator(
        UserConfig("ci", password_hash=hash_password("pw")),
        passthrough=True,
        probes={"platform": yes},
    )
    assert (await auth.identify(header("gitlab-ci-token", "glcbt-job"))).passthrough
    assert calls == []


def test_no_password_matches_a_dummy_hash() -> None:
    dummy = dummy_hash()
    assert parse_hash(dummy)[:3] == parse_hash(hash_password("x"))[:3]
    assert not verify_hash("", dummy)
    assert dummy_hash() != dummy


async def test_passthrough_sees_what_gitlab_lets_it_read_and_the_verdict_is_kept() -> None:
    asked: list[str] = []

    def probe(source: str, allowed: bool):
        async def ask(auth: httpx2.Auth) -> bool:
            asked.append(source)
            await asyncio.sleep(0)
            return allowed

        return ask

    auth = authenticator(
        UserConfig("ci", password="pw"),
        passthrough=True,
        probes={"platform": probe("platform", True), "tools": probe("tools", False)},
    )
    job = header("gitlab-ci-token", "glcbt-secret")
    answers = await asyncio.gather(*(auth.identify(job) for _ in range(5)))
    assert {a.readable for a in answers} == {frozenset({"platform"})}
    assert all(a.passthrough and a.user is None for a in answers)
    assert sorted(asked) == ["platform", "tools"]  # one probe per source for all five requests
    assert "glcbt-secret" not in repr(auth._readable)
    upload = await auth.identify(job, upload=True)
    assert upload.uploadable == TARGETS and len(asked) == 2  # GitLab decides on uploads
    with pytest.raises(Unauthorized):
        await auth.identify(header("ci", "not-pw"))  # a proxy user's name is never passed on


async def test_passthrough_that_can_read_nothing_is_challenged() -> None:
    async def no(auth: httpx2.Auth) -> bool:
        return False

    auth = authenticator(passthrough=True, probes={"platform": no}, public=frozenset({"pypi"}))
    with pytest.raises(Unauthorized):  # public sources alone do not make credentials valid
        await auth.identify(header("x", "glpat-unknown"))


async def test_passthrough_credentials_gitlab_accepts_read_the_public_sources_too() -> None:
    async def yes(auth: httpx2.Auth) -> bool:
        return True

    auth = authenticator(passthrough=True, probes={"platform": yes}, public=frozenset({"pypi"}))
    identity = await auth.identify(header("gitlab-ci-token", "glcbt-job"))
    assert identity.readable == {"platform", "pypi"}


async def test_passthrough_when_gitlab_is_down_cannot_be_verified() -> None:
    async def down(auth: httpx2.Auth) -> bool:
        raise SourceUnavailable("platform", "timed out", timeout=True)

    auth = authenticator(passthrough=True, probes={"platform": down})
    with pytest.raises(CannotVerify, match="upstream platform unavailable") as caught:
        await auth.identify(header("x", "glpat-unknown"))
    assert caught.value.timeout
    assert len(auth._readable) == 0  # nothing remembered: asked again next time


def _password_of(auth: httpx2.Auth) -> tuple[str, str]:
    request = next(auth.auth_flow(httpx2.Request("GET", "http://gitlab/")))
    return basic_credentials(request.headers["authorization"]) or ("", "")


async def test_with_passthrough_names_are_not_told_apart_by_time_or_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any name that is no user pays the slow hash, and a user's name with a wrong password is
    asked of GitLab too (with credentials GitLab refuses): the same work, the same 401."""
    calls = _count_kdf(monkeypatch)
    asked: list[tuple[str, str]] = []

    async def probe(auth: httpx2.Auth) -> bool:
        asked.append(_password_of(auth))
        return False

    auth = authenticator(
        UserConfig("ci", password_hash=hash_password("pw")),
        passthrough=True,
        probes={"platform": probe},
    )
    with pytest.raises(Unauthorized):
        await auth.identify(header("ci", "wrong-1"))
    with pytest.raises(Unauthorized):
        await auth.identify(header("nobody", "wrong-2"))
    assert [password for password, _ in calls] == ["wrong-1", "wrong-2"]
    assert len(asked) == 2 and asked[1] == ("nobody", "wrong-2")
    assert "ci" not in asked[0] and "wrong-1" not in asked[0]  # never the user's name or try
    upload = await auth.identify(header("ci", "wrong-3"), upload=True)
    assert upload.passthrough and _password_of(upload.upstream) == asked[0]  # GitLab refuses it


async def test_with_passthrough_and_gitlab_down_a_users_name_fails_like_any_other() -> None:
    async def down(auth: httpx2.Auth) -> bool:
        raise SourceUnavailable("platform", "ConnectError")

    auth = authenticator(
        UserConfig("ci", password="pw"), passthrough=True, probes={"platform": down}
    )
    for name in ("ci", "nobody"):
        with pytest.raises(CannotVerify):
            await auth.identify(header(name, "wrong"))
    assert (await auth.identify(header("ci", "pw"))).user == "ci"


async def test_concurrent_checks_of_one_credential_share_one_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_kdf(monkeypatch)
    auth = authenticator(UserConfig("ci", password_hash=hash_password("pw")))
    answers = await asyncio.gather(*(auth.identify(header("ci", "pw")) for _ in range(10)))
    assert {a.user for a in answers} == {"ci"}
    assert len(calls) == 1


async def test_hashing_has_a_bounded_pool_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood of checks blocks at most HASH_THREADS threads of its own pool: the default
    executor, which serves files and pages, stays free."""
    release = threading.Event()
    lock = threading.Lock()
    running, most, threads = 0, 0, set()

    def blocking(password: str, encoded: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            threads.add(threading.current_thread().name)
        release.wait(timeout=30)
        with lock:
            running -= 1
        return False

    monkeypatch.setattr(auth_module, "verify_hash", blocking)
    auth = authenticator(UserConfig("ci", password_hash=hash_password("pw")))
    flood = [asyncio.ensure_future(auth.identify(header("ci", f"guess-{i}"))) for i in range(20)]
    try:
        await async_wait_until(lambda: running >= 1, "the hashing started")
        # with every hashing thread blocked, the default executor still answers at once
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), timeout=10) == "free"
    finally:
        release.set()
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    assert 1 <= most <= auth_module.HASH_THREADS
    assert all(name.startswith("password-hash") for name in threads)
    auth.close()


async def test_a_client_whose_logins_keep_failing_is_refused_before_any_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _count_kdf(monkeypatch)
    config = AuthConfig(anonymous_read=False, failed_logins_per_minute=3)
    users = (UserConfig("ci", password_hash=hash_password("pw")),)
    auth = Authenticator(config, users, TARGETS, {}, frozenset())
    now = [1000.0]
    auth.failures.clock = lambda: now[0]
    assert (await auth.identify(header("ci", "pw"), client="10.0.0.1")).user == "ci"
    for attempt in range(3):
        with pytest.raises(Unauthorized):
            await auth.identify(header("ci", f"guess-{attempt}"), client="10.0.0.1")
    hashed = len(calls)
    with pytest.raises(TooManyFailures) as refused:
        await auth.identify(header("ci", "guess-3"), client="10.0.0.1")
    assert refused.value.retry_after == 20  # one more failure allowed every 60/3 s
    assert str(refused.value) == "too many failed logins from this address: retry in 20 s"
    assert len(calls) == hashed  # refused without a hash
    # credentials already accepted still work from that address; other addresses are not limited
    assert (await auth.identify(header("ci", "pw"), client="10.0.0.1")).user == "ci"
    with pytest.raises(Unauthorized):
        await auth.identify(header("ci", "guess-4"), client="10.0.0.2")
    now[0] += 20
    with pytest.raises(Unauthorized):
        await auth.identify(header("ci", "guess-5"), client="10.0.0.1")
    with pytest.raises(TooManyFailures):
        await auth.identify(header("ci", "guess-6"), client="10.0.0.1")


def test_login_limit_refills_and_forgets_the_oldest_clients() -> None:
    now = [0.0]
    limit = LoginLimit(60, clock=lambda: now[0])  # a burst of 60, then one a second
    assert limit.retry_after("a") == 0
    for _ in range(60):
        limit.failed("a")
    assert limit.retry_after("a") == 1
    for _ in range(100):  # failing on (hashes already under way): at most two windows' wait
        limit.failed("a")
    assert limit.retry_after("a") == 61
    now[0] += 61
    assert limit.retry_after("a") == 0
    assert limit.retry_after("never-failed") == 0
