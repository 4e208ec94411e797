"""Drives the web UI of a `spanline demo` whose pipeline has no trace repository
(`repository.enabled: false`) in headless Chromium (Playwright).

Usage: web_ui_no_repository.py UI_URL CHROMIUM SERVICES

Checks: the Services view fills with one row per service of the workload (SERVICES,
comma-separated) from live windows alone; the views that read the repository (search,
service graph, compare, a trace) say that it is off instead of failing; running
executions still load; and the browser logged no console error (no request to an API
that is not there). Prints `ok` last.
"""

import sys

from playwright.sync_api import sync_playwright

from ui_page import TIMEOUT_MS, open_page, wait_for_services, verdict



def main() -> int:
    url, chromium, services = sys.argv[1:4]
    services = sorted(services.split(","))
    problems = []
    with sync_playwright() as p:
        browser, page = open_page(p, chromium, problems)

        page.goto(url)
        wait_for_services(page, services)
        print(f"services view: {len(services)} rows from live windows")

        for view in ["search?service=api-gateway", "graph", "compare", "trace/0123456789abcdef0123456789abcdef"]:
            page.goto(url + "#/" + view)
            name = view.split("?")[0].split("/")[0]
            page.wait_for_selector(f"#view [data-view='{name}'][data-loaded='true']", timeout=TIMEOUT_MS)
            notice = page.locator("#no-repository")
            if notice.count() != 1:
                problems.append(f"#/{view}: no notice that the repository is off")
            else:
                print(f"#/{view}: {notice.inner_text()[:60]}...")

        page.goto(url + "#/running")
        page.wait_for_selector("#view [data-view='running'][data-loaded='true']", timeout=TIMEOUT_MS)
        if page.locator("#no-repository").count() != 0:
            problems.append("#/running says the repository is off, but the pipeline answers it")
        if page.locator("#view .bad").count() != 0:
            problems.append(f"#/running failed: {page.locator('#view .bad').first.inner_text()}")
        browser.close()

    return verdict(problems)


if __name__ == "__main__":
    sys.exit(main())
