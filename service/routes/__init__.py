"""Thin HTTP routers, one per protocol; all of them call :mod:`service.dataplane`."""

from service.routes import health, models, predict, repository, tfserving, v2

__all__ = ["health", "models", "predict", "repository", "tfserving", "v2"]
