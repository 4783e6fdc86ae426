"""The operator console at ``/ui``: static pages served by the gateway (``assets``) and the
two read endpoints they need beyond the admin API (``api``: an overview of every model in
one call, and a model's per-minute history)."""

from service.console.api import router
from service.console.assets import app

__all__ = ["app", "router"]
