"""Everything HTTP: the Gateway BentoML service, routing, the admin API, auth and errors."""

__all__: list[str] = []
