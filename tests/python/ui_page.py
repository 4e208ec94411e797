"""What the browser tests of the web UI share: a 1280x800 page in headless Chromium that
files every console error and page error in `problems`, and the wait for the Services
view to hold a row per service of the workload."""

TIMEOUT_MS = 150_000


def open_page(playwright, chromium, problems):
    """A new page in a new headless browser (Debian's Chromium at `chromium`)."""
    browser = playwright.chromium.launch(executable_path=chromium, headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return browser, page


def wait_for_services(page, services):
    """Waits until the Services view lists exactly `services` (sorted)."""
    page.wait_for_function(
        """(want) => {
            const got = [...document.querySelectorAll('#services tr[data-service]')]
                .map((r) => r.dataset.service).sort();
            return JSON.stringify(got) === JSON.stringify(want);
        }""",
        arg=services,
        timeout=TIMEOUT_MS,
    )


def verdict(problems):
    """Prints each problem, or `ok` when there are none; the exit status."""
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print("ok")
    return 0
