"""Drives the web UI of a running `spanline demo` in headless Chromium (Playwright).

Usage: web_ui_browser.py UI_URL SCREENSHOT_DIR CHROMIUM SERVICES FAULTY_SERVICE

Checks: one row per service of the workload (SERVICES, comma-separated) on the
Services view, a trace opened from the search shows its waterfall with the critical path
marked, the alert of the demo's error burst arrives live on the Alerts view naming
FAULTY_SERVICE as suspected service, inside an incident named after it, the other views render, and the browser logged no
console error. Screenshots at 1280x800 go to SCREENSHOT_DIR. Prints the live stream's
push delays (pipeline emit to page) and `ok` last.
"""

import statistics
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from ui_page import TIMEOUT_MS, open_page, wait_for_services, verdict



def main() -> int:
    url, shots, chromium, services, faulty = sys.argv[1:6]
    services = sorted(services.split(","))
    shots = Path(shots)
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as p:
        browser, page = open_page(p, chromium, problems)

        # Services: a row per service of the workload, filled by live windows
        page.goto(url)
        wait_for_services(page, services)
        rows = page.locator("#services tr[data-service]").count()
        print(f"services view: {rows} rows")
        page.screenshot(path=str(shots / "services.png"))

        # Search, then the trace view with its critical path
        # a longer trace shows more of the waterfall; any trace will do when none is stored yet
        page.goto(url + "#/search?service=api-gateway&minDuration=300ms")
        page.wait_for_selector("#results tr.trace-row, #results .empty", timeout=TIMEOUT_MS)
        if page.locator("#results tr.trace-row").count() == 0:
            page.goto(url + "#/search?service=api-gateway")
            page.wait_for_selector("#results tr.trace-row", timeout=TIMEOUT_MS)
        page.screenshot(path=str(shots / "search.png"))
        page.locator("#results tr.trace-row").first.click()
        page.wait_for_selector("#waterfall .wf-row", timeout=TIMEOUT_MS)
        critical = page.locator("#waterfall .wf-row.critical").count()
        spans = page.locator("#waterfall .wf-row").count()
        assert critical >= 1, f"no span of the trace is marked on the critical path ({spans} spans)"
        bottleneck = page.locator("#bottleneck").inner_text()
        print(f"trace view: {spans} spans, {critical} on the critical path, bottleneck {bottleneck}")
        page.screenshot(path=str(shots / "trace.png"))

        # Service graph
        page.goto(url + "#/graph")
        page.wait_for_selector("#graph g.node", timeout=TIMEOUT_MS)
        print(f"service graph: {page.locator('#graph g.node').count()} services")
        page.screenshot(path=str(shots / "graph.png"))

        # Running executions and the comparison render
        page.goto(url + "#/running")
        page.wait_for_selector("#running table", timeout=TIMEOUT_MS)
        page.screenshot(path=str(shots / "running.png"))
        page.goto(url + "#/compare")
        page.wait_for_selector("[data-view=compare][data-loaded]", timeout=TIMEOUT_MS)
        page.screenshot(path=str(shots / "compare.png"))

        # Alerts: the error burst's incident arrives while the page is open, named after
        # the faulty service, led by its service_errors alert, symptoms under it
        page.goto(url + "#/alerts")
        named = f"#alerts section.incident:has(h3 .cause:text-is('{faulty}'))"
        page.wait_for_selector(named + " .alert[data-rule=service_errors]", timeout=TIMEOUT_MS)
        lead = page.locator(named + " > .alert").first
        assert lead.get_attribute("data-rule") == "service_errors", lead.inner_text()
        suspected = lead.locator(".suspected").inner_text()
        assert suspected == faulty, f"the lead alert suspects {suspected}, not {faulty}"
        # the ranked suspects: the first is the suspected service, with its evidence
        first = lead.locator("ol.suspects > li").first
        assert first.locator("b").first.inner_text() == faulty, first.inner_text()
        assert first.locator("ul li").count() >= 1, f"no evidence for {faulty}"
        exemplars = lead.locator("a.exemplar").count()
        members = page.locator(named + " .alert").count()
        incidents = page.locator("#alerts section.incident").count()
        print(f"alerts view: the incident on {faulty} led by service_errors suspecting "
              f"{suspected} ({exemplars} exemplar traces), {members} alerts in it; "
              f"{incidents} incidents on the page")
        page.screenshot(path=str(shots / "alerts.png"))

        # by now several windows have closed: every service row has its sparklines
        page.goto(url + "#/services")
        page.wait_for_selector("#services svg.spark path", timeout=TIMEOUT_MS)
        drawn = page.locator("#services svg.spark path").count()
        print(f"services view: {drawn} sparklines drawn")
        page.screenshot(path=str(shots / "services-later.png"))

        live = page.evaluate("window.spanlineLive")
        delays = sorted(live["delays"])
        assert live["windows"] > 0, "no closed window reached the page live"
        assert live["alerts"] > 0, "the alert did not reach the page live"
        if delays:
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
            print(
                f"push delay: {len(delays)} events ({live['windows']} windows, {live['alerts']} alerts),"
                f" median {statistics.median(delays):.0f} ms, p99 {p99} ms, max {delays[-1]} ms"
            )
        browser.close()
    return verdict(problems)


if __name__ == "__main__":
    sys.exit(main())
