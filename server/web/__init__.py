"""The kiosk web page and its WebSocket bridge onto the engine's sessions (protocol in `protocol`)."""

from lipstream.server.web.app import STATIC_DIR, WebServer

__all__ = ["STATIC_DIR", "WebServer"]
