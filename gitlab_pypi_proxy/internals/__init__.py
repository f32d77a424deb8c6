"""Other libraries' internals: the one place in the proxy that builds on names a library does not
document or promise to keep (tests/unit/test_layering.py fails on any such use elsewhere).

Only what has no public way lives here, each module stating what it uses, the versions it was
tested on and the test that fails when it stops applying; pyproject.toml bounds each library
above the versions tested, so an upgrade is a decision, not an accident. The modules:
server_protocol.py, reason_phrases.py (uvicorn 0.55), spawning.py (CPython 3.11); the table in
docs/architecture.md says why each. Each is installed once by the process that needs it: the
worker at start (`install_in_worker`, from gitlab_pypi_proxy.cli.app_factory), the supervisor
before it starts the workers. Keep this package's imports lazy: the supervisor must stay small."""


def install_in_worker(header_timeout: float) -> None:
    """What a worker sets up before it accepts a connection (uvicorn loads the app first): the
    reason phrases, and `[server] header_timeout` for its connections. Idempotent."""
    from gitlab_pypi_proxy.internals import reason_phrases, server_protocol

    reason_phrases.install()
    server_protocol.CoalescingHttpTools.header_timeout = header_timeout
