"""The console's static files, mounted at ``/ui``: nothing but files from this package, with
a Content-Security-Policy that lets the page load and fetch from its own origin only."""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"

# form-action 'none': should the script fail, the sign-in form cannot submit the token anywhere
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
          "frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", POLICY.encode()),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
           (b"x-frame-options", b"DENY"), (b"cache-control", b"no-cache")]


class ConsoleFiles:
    """``StaticFiles`` over ``static/`` (``/ui/`` answers index.html; the router redirects
    ``/ui`` there), each response with the console's security headers."""

    def __init__(self, directory: Path = STATIC) -> None:
        self.files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.files(scope, receive, secured)


app = ConsoleFiles()
