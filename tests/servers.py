"""Serve an ASGI app with uvicorn on a loopback port in a background thread, for the tests: the
demo's helper (gitlab_pypi_proxy/demo/server.py), one copy."""

from gitlab_pypi_proxy.demo.server import Server, serve

__all__ = ["Server", "serve"]
