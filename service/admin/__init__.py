"""The operator API, mounted at ``/admin``: ``app.create_app`` joins one router per area
(``models``, ``deployments``, ``audit``, ``drift``, ``webhooks``, ``rollouts``), which share
``deps`` (the worker context, the token check, audit rows, JSON bodies, If-Match).

Every route needs a bearer token of a sufficient role; every mutation and every denied
attempt is written to the audit log (actor = the token's name, never the token). This
``__init__`` imports nothing, so importing one router never drags in the others.
"""
