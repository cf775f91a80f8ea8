"""``xpnet demo``: draw a digit in the browser and watch the model read it (server.py, static/)."""

from xpnet.demo.server import DemoModel, DemoServer, make_server

__all__ = ["DemoModel", "DemoServer", "make_server"]
