"""The operator console at /ui in a real Chromium (Debian's ``chromium``, driven by Playwright;
never a downloaded browser) against a real 2-worker server of its own: the console's
actions change the demo deployment, and its drift must not see other tests' traffic.

Every request the page makes is intercepted: one to any host but the server's fails the test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import DEMO
from tests.e2e.conftest import Server, start_server, stop_server
from tests.e2e.test_drift import MOVED, send
from tests.e2e.test_monitoring import wait_for

pytestmark = pytest.mark.e2e
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright for Python is not installed (dev extras)")
CHROMIUM = os.environ.get("VIGIL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)",
                allow_module_level=True)
REFRESH = 3.0  # the console polls every 3 s (POLL_MS in app.js)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    proc, srv = start_server(tmp_path_factory.mktemp("vigil-console"))
    yield srv
    stop_server(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


class Tab:
    """A page on the console, with every request and console error it caused."""

    def __init__(self, browser: Any, server: Server, width: int = 1280, height: int = 800):
        self.server = server
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self.errors: list[str] = []
        host = urlsplit(server.url).netloc

        def guard(route: Any) -> None:
            url = route.request.url
            self.requests.append(url)
            if urlsplit(url).netloc != host:
                self.foreign.append(url)
                route.abort()
            else:
                route.continue_()

        self.context.route("**/*", guard)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def sign_in(self, token: str) -> None:
        self.page.goto(f"{self.server.url}/ui")
        self.page.fill("#token", token)
        self.page.click("#signin button[type=submit]")

    def go(self, route: str) -> None:
        self.page.evaluate("r => { location.hash = r; }", route)

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def contrast_violations(self) -> list[Any]:
        self.page.add_script_tag(url=f"{self.server.url}/ui/vendor/axe.min.js")
        return list(self.page.evaluate("""async () => {
            const only = {runOnly: {type: "rule", values: ["color-contrast"]}};
            const r = await axe.run(document, only);
            return r.violations.flatMap(
                v => v.nodes.map(n => n.target.join(" ") + ": " + n.failureSummary));
        }"""))

    def confirm(self, expect: str) -> str:
        """Confirm the open dialog after checking it names the change; the flash it leaves."""
        dialog = self.page.locator("#confirm")
        dialog.wait_for(state="visible")
        text = self.text("#confirm-text")
        assert expect in text, text
        self.page.click("#confirm-ok")
        self.page.locator("#flash").wait_for(state="visible")
        return self.text("#flash")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, server: Server) -> Iterator[Tab]:
    t = Tab(browser, server)
    yield t
    t.close()


def until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_viewer_sees_every_model_and_no_action(tab: Tab, server: Server,
                                                 tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:  # some traffic for the charts
        for i in range(40):
            body = {"model": "diabetes", "instances": [[0.01 * (i % 7)] * 10]}
            assert c.post("/predict", json=body).status_code == 200
    tab.sign_in("tok-viewer")
    page = tab.page
    page.locator("article[data-model=diabetes]").wait_for()
    cancer = tab.text("article[data-model=breast_cancer]")
    for part in ("v1 champion 90%", "v2 canary 10%", "v3 shadow", "Registered: v1, v2, v3"):
        assert part in cancer, cancer
    assert "v1 champion 100%" in tab.text("article[data-model=diabetes]")
    assert tab.text("#who") == "viewer-token (viewer)"
    assert page.locator("[data-action]").count() == 0
    assert tab.contrast_violations() == []
    page.screenshot(path=tmp_path / "overview.png", full_page=True)

    tab.go("#/model/diabetes")
    page.locator("#features").wait_for()
    assert until(lambda: page.locator("#chart-requests canvas").count() > 0, 2 * REFRESH)
    assert until(lambda: "v1 champion" in tab.text("#quality"), 2 * REFRESH)
    page.screenshot(path=tmp_path / "model.png", full_page=True)
    assert page.locator("[data-action], #deployment button").count() == 0
    assert tab.contrast_violations() == []
    for route in ("#/rollouts", "#/webhooks", "#/audit"):
        tab.go(route)
        time.sleep(0.5)
        assert page.locator("[data-action]").count() == 0, route
    # the server refuses a viewer's action anyway
    r = httpx.post(f"{server.url}/admin/deployments/diabetes/rollback",
                   headers=server.headers("viewer"))
    assert r.status_code == 403

    assert tab.errors == []
    assert tab.foreign == []
    assert any("/admin/overview" in u for u in tab.requests)
    assert not any("tok-" in u for u in tab.requests)  # the token is never in a URL
    assert page.context.cookies() == []


def test_shifted_traffic_is_marked_and_its_feature_ranked_first(tab: Tab, server: Server,
                                                                tmp_path: Path) -> None:
    reference = pd.read_csv(DEMO / "breast_cancer" / "v1" / "reference.csv")
    rng = np.random.default_rng(23)
    moved = reference.to_numpy()[rng.integers(0, len(reference), 1500)].copy()
    moved[:, list(reference.columns).index(MOVED)] += reference[MOVED].std()
    tab.sign_in("tok-viewer")
    card = tab.page.locator("article[data-model=breast_cancer]")
    card.wait_for()
    assert "attention" not in card.inner_text()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        send(c, moved)
        wait_for(lambda: c.get("/admin/drift/breast_cancer?version=v1",
                               headers=server.headers("viewer")).json(),
                 lambda d: bool(d["active_alarms"]))
    # the alarm is committed: the overview marks the model within a few refreshes
    assert until(lambda: "card bad" in (card.get_attribute("class") or ""), 3 * REFRESH + 2)
    assert "Drift alarms: v1 input_" in card.inner_text()
    tab.page.screenshot(path=tmp_path / "overview-drift.png")
    if os.environ.get("VIGIL_UPDATE_CONSOLE_PNG"):  # the README's picture
        tab.page.screenshot(path=ROOT / "docs" / "console.png")
    tab.page.click("article[data-model=breast_cancer] h2 a")
    first = tab.page.locator("#features tbody tr:first-child th")
    first.wait_for()
    assert first.inner_text() == MOVED
    assert "open alarm" in tab.text("#drift [data-version=v1] h3")
    tab.page.screenshot(path=tmp_path / "model-drift.png", full_page=True)
    assert tab.errors == []
    assert tab.foreign == []


def audit_rows(server: Server, action: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/admin/audit?action={action}", headers=server.headers("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def test_an_operator_acts_and_a_stale_page_is_refused(tab: Tab, server: Server) -> None:
    page = tab.page
    tab.sign_in("tok-operator")
    page.locator("article[data-model=breast_cancer]").wait_for()
    tab.go("#/model/breast_cancer")

    ack = page.locator("#drift [data-version=v1] [data-action=ack]")
    if not until(lambda: ack.count() > 0, 2 * REFRESH):  # the drift test ran first, or not
        with httpx.Client(base_url=server.url, timeout=30) as c:
            test_data = pd.read_csv(DEMO / "breast_cancer" / "v1" / "reference.csv")
            rows = test_data.to_numpy()[:1500].copy()
            rows[:, list(test_data.columns).index(MOVED)] += test_data[MOVED].std()
            send(c, rows)
        assert until(lambda: ack.count() > 0, 60)
    ack.click()
    assert "Acknowledged" in tab.confirm("Acknowledge")
    assert audit_rows(server, "drift.ack")[0]["actor"] == "operator-token"

    page.fill("#canary-weight", "25")
    page.click("[data-action=set-weight]")
    flash = tab.confirm("Set the canary of breast_cancer to v2 at 25% (from v2 at 10%")
    assert "v2 at 25%" in flash, flash
    row = audit_rows(server, "deployments.patch")[0]
    assert (row["actor"], row["outcome"]) == ("operator-token", "ok")
    assert row["after"]["canary"] == {"version": "v2", "weight": 0.25}

    page.click("[data-action=promote]")
    assert "champion is now v2" in tab.confirm("canary v2 becomes champion in place of v1")
    page.locator("[data-action=rollback]").wait_for()
    page.click("[data-action=rollback]")
    assert "champion is now v1" in tab.confirm("the previous champion v1 comes back")
    row = audit_rows(server, "deployments.rollback")[0]
    assert (row["actor"], row["outcome"]) == ("operator-token", "ok")
    assert row["after"]["champion"] == {"version": "v1"}

    # someone else changes the deployment through the API; the page's next action is refused
    current = httpx.get(f"{server.url}/admin/deployments/breast_cancer",
                        headers=server.headers("viewer"))
    r = httpx.patch(f"{server.url}/admin/deployments/breast_cancer",
                    json={"canary": {"version": "v2", "weight": 0.05}},
                    headers={**server.headers("admin"), "If-Match": current.headers["ETag"]})
    assert r.status_code == 200, r.text
    page.fill("#canary-weight", "40")
    page.click("[data-action=set-weight]")
    flash = tab.confirm("to v2 at 40%")
    assert "changed meanwhile" in flash.lower() and "reload" in flash.lower(), flash
    after = httpx.get(f"{server.url}/admin/deployments/breast_cancer",
                      headers=server.headers("viewer")).json()
    assert after["canary"] == {"version": "v2", "weight": 0.05}  # never overwritten
    row = audit_rows(server, "deployments.patch")[0]
    assert (row["actor"], row["outcome"]) == ("operator-token", "rejected")
    # the page's Reload shows the new revision; the action then goes through
    page.click("#flash button:has-text('Reload')")
    assert until(lambda: "v2 canary 5%" in tab.text("#deployment"), 2 * REFRESH)
    assert tab.foreign == []


def test_a_wrong_token_shows_an_error_and_no_data(tab: Tab) -> None:
    tab.sign_in("tok-nobody")
    error = tab.page.locator("#signin-error")
    error.wait_for(state="visible")
    assert "refused" in error.inner_text()
    body = tab.text("body")
    assert "breast_cancer" not in body and "diabetes" not in body
    assert tab.page.locator("#page").inner_html() == ""
    assert tab.page.evaluate("sessionStorage.length") == 0
    assert tab.foreign == []


def test_a_phone_sized_screen_gets_the_same_console(browser: Any, server: Server,
                                                    tmp_path: Path) -> None:
    t = Tab(browser, server, width=390, height=844)
    try:
        t.sign_in("tok-viewer")
        t.page.locator("article[data-model=diabetes]").wait_for()
        scroll = t.page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= 390, f"the page scrolls sideways ({scroll} px)"
        t.page.screenshot(path=tmp_path / "overview-phone.png", full_page=True)
        t.page.reload()  # a fresh tab order; the token stays in the tab's sessionStorage
        t.page.locator("article[data-model=diabetes]").wait_for()
        t.page.keyboard.press("Tab")  # the skip link first, then the navigation
        assert t.page.evaluate("document.activeElement.className") == "skip"
        assert t.errors == [] and t.foreign == []
    finally:
        t.close()
