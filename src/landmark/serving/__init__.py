"""Serving: the recogniser as a FastAPI application with a web page (``landmark serve``)."""
from .app import create_app
from .uploads import Limits

__all__ = ["create_app", "Limits"]
