"""Serving: the recogniser as a FastAPI application with a web page (``landmark serve``).

Names are imported on first use (PEP 562): ``landmark.serving.settings`` (the settings and
their bounds) is importable without loading torch or FastAPI.
"""
from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {"create_app": "app", "Limits": "uploads", "serve": "server",
                                               "ServeSettings": "settings"})
__all__ = ["create_app", "Limits", "serve", "ServeSettings"]
