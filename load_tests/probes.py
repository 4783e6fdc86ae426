"""What the benchmark reads from a running Vigil between and after its runs: the Monitor's lag
and the log's drops (``/metrics``, the model's stats), waiting for the Monitors to catch up
before each measured run, and the sustained-load sweep whose verdict reads the Monitor's lag
while it runs."""

from __future__ import annotations

import time

from load_tests.kinds import TOKEN, TRUST, Servers
from load_tests.loadgen import hey


def monitor_health(url: str) -> tuple[float | None, float, str]:
    """The Monitor's lag (events), the log's drops and what became of the shadows (answered,
    or shed: dropped, timed out, failed), read from the running Vigil."""
    h = {"Authorization": f"Bearer {TOKEN}"}
    import httpx

    stats = httpx.get(f"{url}/admin/models/breast_cancer/stats", headers=h, timeout=30,
                      verify=TRUST.get(url, True)).json()
    text = httpx.get(f"{url}/metrics", timeout=30, verify=TRUST.get(url, True)).text
    drops = gauge(text, "vigil_prediction_log_dropped_total")
    outcomes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vigil_shadow_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            outcomes[outcome] = outcomes.get(outcome, 0) + float(line.rsplit(" ", 1)[1])
    shadows = ", ".join(f"{n:,.0f} {k}" for k, n in sorted(outcomes.items()) if n) or "none"
    return stats["monitor"].get("lag_events"), drops, shadows


def gauge(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def caught_up(url: str, timeout: float = 90) -> float:
    """Wait until the Monitor has consumed every record; the seconds it took."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        text = httpx.get(url + "/metrics", timeout=10, verify=TRUST.get(url, True)).text
        if gauge(text, "vigil_monitor_lag_events") == 0:
            break
        time.sleep(0.2)
    return time.monotonic() - start


def quiesce(servers: Servers) -> None:
    """Before each measured run, every Vigil's Monitor has caught up: a Monitor still
    consuming the last run's records would take CPU from the next run (on 2 cores the
    server measured second paid for the first's backlog — a shadow, which doubles the
    records, looked 15–23% *faster* than no shadow)."""
    for kind, (_, url) in servers.items():
        if kind != "bare":
            caught_up(url)


def sustained(url: str, body: dict, peak: float, seconds: float, connections: int = 16
              ) -> list[str]:
    """Vigil at fixed request rates below its peak: the latency each rate gets and how far the
    Monitor falls behind meanwhile (``vigil_monitor_lag_seconds``, sampled every 0.25 s: the
    age of the oldest record the Monitor has not consumed, published after each tick)."""
    import threading

    import httpx

    rows = []
    for fraction in (0.25, 0.5, 0.75):
        rate = round(peak * fraction / connections) * connections or connections
        lag_max, stop = [0.0], threading.Event()

        def sample(lag_max: list[float] = lag_max, stop: threading.Event = stop) -> None:
            with httpx.Client(timeout=10) as c:
                while not stop.wait(0.25):
                    text = c.get(url.split("/predict")[0] + "/metrics").text
                    lag_max[0] = max(lag_max[0], gauge(text, "vigil_monitor_lag_seconds"))
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            r = hey(url, body, seconds, connections, rate=rate)
        finally:
            stop.set()
            sampler.join()
        ok = "yes" if r["p99"] <= 25 and r["p99.9"] <= 50 else "no"
        rows.append(f"| {rate:,.0f} req/s | {r['rps']:,.0f} req/s | {r['p50']:.1f} / "
                    f"{r['p99']:.1f} / {r['p99.9']:.1f} | {ok} | {lag_max[0]:.2f} s | "
                    f"{r['non_200']:.0f} |")
        print(rows[-1], flush=True)
    return rows
