"""ffserve: a WebSocket FFmpeg job service on Trio."""

from __future__ import annotations

__version__ = "0.1.0"
