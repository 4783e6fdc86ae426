"""The console's files as the gateway serves them at /ui: from the package only, with a
same-origin Content-Security-Policy, and no reference to another host in our own files."""

from __future__ import annotations

import re

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from service.console.assets import STATIC, app


def client() -> TestClient:
    return TestClient(Starlette(routes=[Mount("/ui", app)]))


def test_index_and_assets_are_served_with_a_same_origin_policy() -> None:
    with client() as c:
        r = c.get("/ui/")
        assert r.status_code == 200 and "<title>Vigil console</title>" in r.text
        policy = r.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "form-action 'none'" in policy
        assert r.headers["x-content-type-options"] == "nosniff"
        for path in ("app.js", "app.css", "vendor/uPlot.iife.min.js", "vendor/axe.min.js"):
            assert c.get(f"/ui/{path}").status_code == 200, path
        assert c.get("/ui/nope.js").status_code == 404
        assert c.get("/ui", follow_redirects=False).status_code in (307, 308)


def test_our_files_name_no_other_host_and_the_vendored_ones_are_recorded() -> None:
    for name in ("index.html", "app.js", "app.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), name
    versions = (STATIC / "vendor" / "VERSIONS").read_text()
    assert "uplot 1.6.32 MIT" in versions and "axe-core 4.11.1 MPL-2.0" in versions
    assert (STATIC / "vendor" / "LICENSE.uplot").is_file()
    assert (STATIC / "vendor" / "LICENSE.axe-core").is_file()
