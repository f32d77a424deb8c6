"""Serve an ASGI app with uvicorn on a loopback port in a background thread, for the tests: the
demo's helper (proxy/demo/server.py), one copy."""

from proxy.demo.server import Server, serve

__all__ = ["Server", "serve"]
