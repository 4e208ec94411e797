"""Drives the web UI of a `spanline demo` started with `SPANLINE_API_TOKEN` in headless
Chromium (Playwright).

Usage: web_ui_token.py UI_URL CHROMIUM SERVICES TOKEN

Checks: without the token the page loads but its API calls are refused, and it says
that the API needs a token; a wrong token is refused the same way; once the token is
entered in the field at the top right, the Services view fills with one row per service
of the workload (SERVICES, comma-separated) and a search finds traces; the token is kept
for the tab only (sessionStorage). Console errors are problems, except the browser's
own reports of the refused (401) requests made before the right token was entered.
Prints `ok` last.
"""

import sys

from playwright.sync_api import sync_playwright

from ui_page import TIMEOUT_MS, open_page, wait_for_services, verdict


def enter_token(page, token):
    page.fill("#token", token)
    with page.expect_navigation():
        page.press("#token", "Enter")


def wait_for_token_notice(page):
    page.wait_for_function(
        "() => (document.getElementById('notice')?.innerText || '').includes('token')",
        timeout=TIMEOUT_MS,
    )


def main() -> int:
    url, chromium, services, token = sys.argv[1:5]
    services = sorted(services.split(","))
    console = []
    problems = []
    with sync_playwright() as p:
        browser, page = open_page(p, chromium, console)

        page.goto(url)
        wait_for_token_notice(page)
        if page.locator("#services tr[data-service]").count() != 0:
            problems.append("services listed without the token")
        print("without a token: " + page.locator("#notice").inner_text())

        enter_token(page, "not-" + token)
        wait_for_token_notice(page)
        print("a wrong token: refused")
        refused = len(console)

        enter_token(page, token)
        wait_for_services(page, services)
        print(f"with the token: {len(services)} service rows")
        stored = page.evaluate("() => sessionStorage.getItem('spanline.token')")
        if stored != token:
            problems.append(f"token kept as {stored!r}, not for the tab")

        page.goto(url + "#/search?service=api-gateway")
        page.wait_for_selector("#view [data-view='search'][data-loaded='true']", timeout=TIMEOUT_MS)
        # a failure is a `p.bad` message (a result row's error count is a `td.bad`)
        if page.locator("#view p.bad").count() != 0:
            problems.append(f"search failed: {page.locator('#view p.bad').first.inner_text()}")
        browser.close()

    before, after = console[:refused], console[refused:]
    unexpected = [c for c in before if "401" not in c]
    if not before:
        problems.append("the refused requests left no trace in the console")
    for c in unexpected + after:
        problems.append(c)
    return verdict(problems)


if __name__ == "__main__":
    sys.exit(main())
