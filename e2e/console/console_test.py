"""The web console (/ui on the admin listener) in a real browser: Chromium driven by
Playwright.

Run by scripts/console-test.sh, which starts the mock provider and `byok serve`, creates
an org `acme` with a team and a credential `prod-openai`, makes one allowed call through
the data plane and two refused ones whose model is hostile markup, and passes in the
environment:

    BYOK_ADMIN_URL            the admin listener, http://127.0.0.1:PORT
    BYOK_OPERATOR_TOKEN       the operator token
    CONSOLE_ORG_ADMIN_TOKEN   an org-admin token of acme
    CONSOLE_ORG, CONSOLE_CREDENTIAL   their names
    CONSOLE_FINGERPRINT       the credential's fingerprint
    CONSOLE_CALL_ID           the allowed call's id (x-byok-call-id)
    CONSOLE_HOSTILE           the hostile text (an <img onerror> and a <script>)
    CONSOLE_SECRETS           provider keys the page must never contain, comma-separated
    CONSOLE_SCREENSHOT        where to save the credential page's screenshot (the org's
                              and the usage page's go beside it: org.png, usage.png)
    CHROMIUM                  the browser (default /usr/bin/chromium)

Exits non-zero on the first failed check; prints one line per step.
"""

import os
import re
import sys

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect, sync_playwright

admin = os.environ["BYOK_ADMIN_URL"].rstrip("/")
operator_token = os.environ["BYOK_OPERATOR_TOKEN"]
org_admin_token = os.environ["CONSOLE_ORG_ADMIN_TOKEN"]
org = os.environ.get("CONSOLE_ORG", "acme")
cred = os.environ.get("CONSOLE_CREDENTIAL", "prod-openai")
fingerprint = os.environ["CONSOLE_FINGERPRINT"]
call_id = os.environ["CONSOLE_CALL_ID"]
hostile = os.environ["CONSOLE_HOSTILE"]
secrets = [s for s in os.environ["CONSOLE_SECRETS"].split(",") if s]
screenshot = os.environ["CONSOLE_SCREENSHOT"]
chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")

expect.set_options(timeout=15_000)

# Set before any of the page's own script runs: a hostile payload that executed would
# set window.__pwned; a CSP violation (an inline handler the policy blocked) is recorded.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def beside(name):
    """A path next to the screenshot, for the other pages' screenshots."""
    return os.path.join(os.path.dirname(os.path.abspath(screenshot)), name)


def step(message):
    print(f"console: {message}", flush=True)


def fail(message):
    print(f"console: FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


class Watched:
    """A page with everything that must not happen recorded."""

    def __init__(self, context):
        self.page = context.new_page()
        self.problems = []
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )

    def assert_clean(self, where, allow=()):
        page = self.page
        pwned = page.evaluate("window.__pwned")
        check(pwned is None, f"{where}: hostile script ran (window.__pwned = {pwned!r})")
        violations = page.evaluate("window.__violations")
        check(not violations, f"{where}: CSP violations {violations}")
        check(page.locator("main img, main script, main iframe, main object").count() == 0,
              f"{where}: API data became markup")
        problems = [p for p in self.problems if not any(a in p for a in allow)]
        check(not problems, f"{where}: {problems}")
        html = page.content()
        text = page.inner_text("body")
        for secret in secrets:
            check(secret not in html and secret not in text, f"{where}: the page contains a provider key")
        check(operator_token not in page.url and org_admin_token not in page.url, f"{where}: a token in the URL")
        check(page.evaluate("document.cookie") == "", f"{where}: a cookie")


def sign_in(page: Page, token):
    page.goto(f"{admin}/ui")
    expect(page.locator("#login")).to_be_visible()
    check(page.evaluate("sessionStorage.length") == 0, "a token stored before signing in")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def cell(row, field):
    return row.locator(f'[data-field="{field}"]')


def timeline_rows(page):
    return page.locator("#timeline tbody tr")


def operator_walk(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_init_script(WATCH)
    w = Watched(context)
    page = w.page

    # A wrong token: refused, nothing kept.
    page.goto(f"{admin}/ui")
    page.fill("#token", "byokadm_not-a-real-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-problem")).to_contain_text("refused")
    check(page.evaluate("sessionStorage.length") == 0, "a refused token was kept")
    step("a wrong token is refused and not kept")

    # The operator token: the org list.
    sign_in(page, operator_token)
    expect(page.locator("#orgs")).to_be_visible()
    expect(page.locator("#who")).to_have_text("operator")
    check(page.evaluate("sessionStorage.length") == 1, "the token is not in sessionStorage")
    w.assert_clean("orgs", allow=("401",))
    step("signed in with the operator token; the org list shows")

    # The org and its credentials.
    page.locator(f'#orgs tr[data-org="{org}"] a').click()
    row = page.locator(f'#credentials tr[data-credential="{cred}"]')
    expect(row).to_be_visible()
    expect(cell(row, "state")).to_have_text("active")
    expect(cell(row, "version")).to_have_text("1")
    expect(cell(row, "fingerprint")).to_have_text(fingerprint)
    expect(cell(row, "scope")).to_contain_text("gpt-4o-mini")
    expect(cell(row, "scope")).to_contain_text("agents")
    expect(page.locator("#chain-status")).to_have_attribute("data-ok", "true")
    w.assert_clean("org page", allow=("401",))
    page.screenshot(path=beside("org.png"), full_page=True)
    step(f"org {org}: {cred} is active, version 1, {fingerprint}")

    # The credential: its facts, the audit chain, the timeline.
    row.locator('[data-field="name"] a').click()
    facts = page.locator("#credential-facts")
    expect(facts).to_be_visible()
    expect(page.locator("main h1")).to_have_text(f"Credential {cred}")
    expect(facts.locator('[data-field="state"] td')).to_have_text("active")
    expect(facts.locator('[data-field="version"] td')).to_have_text("1")
    expect(facts.locator('[data-field="fingerprint"] td')).to_have_text(fingerprint)
    status = page.locator("#chain-status")
    expect(status).to_have_attribute("data-ok", "true")
    expect(status).to_contain_text("OK")
    rows = timeline_rows(page)
    expect(rows.first).to_have_attribute("data-kind", "created")
    created = page.locator('#timeline tr[data-type="lifecycle"][data-kind="created"]')
    expect(created).to_have_count(1)
    expect(created).to_contain_text(fingerprint)
    call = page.locator(f'#timeline tr[data-type="call"][data-call-id="{call_id}"]')
    expect(call).to_have_count(1)
    expect(call).to_have_attribute("data-outcome", "allowed")
    expect(call).to_contain_text("gpt-4o-mini")
    expect(call).to_contain_text("upstream 200")
    expect(page.locator("#timeline-more")).to_be_hidden()
    step(f"credential page: created event, call {call_id} (allowed, upstream 200), audit chain OK")

    # The refused calls' model is hostile markup: shown as text, nothing ran.
    denied = page.locator('#timeline tr[data-type="call"][data-outcome="denied"]')
    expect(denied).to_have_count(2)
    for i in range(2):
        check(hostile in denied.nth(i).inner_text(), "the hostile model is not shown as text")
    w.assert_clean("credential page", allow=("401",))
    total = rows.count()
    order = [rows.nth(i).get_attribute("data-kind") or rows.nth(i).get_attribute("data-call-id") for i in range(total)]
    step(f"hostile text in {denied.count()} refused calls renders as text; no script ran")

    page.screenshot(path=screenshot, full_page=True)
    step(f"screenshot: {screenshot}")

    # Paged: two items a page, "More" until the end, the same items in the same order.
    page.goto(f"{admin}/ui#/orgs/{org}/credentials/{cred}?limit=2")
    expect(rows).to_have_count(2)
    more = page.locator("#timeline-more")
    pages = 1
    while more.is_visible():
        more.click()
        # Disabled while its page loads (the last page may be empty: the one before it
        # was full, so the API could not yet say it was the last).
        page.wait_for_function("() => !document.querySelector('#timeline-more').disabled")
        pages += 1
        check(pages <= total, "the More button never stops")
    expect(rows).to_have_count(total)
    paged = [rows.nth(i).get_attribute("data-kind") or rows.nth(i).get_attribute("data-call-id") for i in range(total)]
    check(paged == order, f"paged timeline differs: {paged} != {order}")
    expect(page.locator("#timeline-status")).to_contain_text("that is all")
    w.assert_clean("paged timeline", allow=("401",))
    step(f"timeline paged 2 at a time: {pages} pages, {total} entries, same order")

    # The usage statement of the current month.
    page.goto(f"{admin}/ui#/orgs/{org}")
    page.get_by_role("link", name="Usage statement for this month").click()
    totals = page.locator("#usage-totals")
    expect(totals).to_be_visible()
    expect(totals.locator('[data-field="calls"] td')).to_have_text("1")
    expect(totals.locator('[data-field="denied"] td')).to_have_text("2")
    expect(totals.locator('[data-field="total"] td')).to_contain_text("USD")
    expect(page.locator("#usage-lines tbody tr")).to_have_count(1)
    expect(page.locator("#usage-lines tbody tr")).to_contain_text("gpt-4o-mini")
    w.assert_clean("usage page", allow=("401",))
    page.screenshot(path=beside("usage.png"), full_page=True)
    step("usage statement: 1 call, 2 denied, one line for gpt-4o-mini")

    # Signing out forgets the token.
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    check(page.evaluate("sessionStorage.length") == 0, "the token outlived signing out")
    page.goto(f"{admin}/ui#/orgs/{org}")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#credentials")).to_have_count(0)
    step("signed out: the token is gone and no page shows data")
    context.close()


HOSTILE_API = re.compile(r"/v1/orgs/[^/]+/credentials(/[^/?]+(/lifecycle)?)?(\?.*)?$")


def hostile_name(browser):
    """The API refuses such a name (scripts/console-test.sh checks); should one ever come
    back anyway, the console shows it as text. The credential answers are rewritten on
    their way to the page."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_init_script(WATCH)

    def rename(route):
        response = route.fetch()
        body = response.json()
        for item in body.get("credentials", []):
            item["name"] = hostile
        if "name" in body:
            body["name"] = hostile
        if isinstance(body.get("credential"), dict):
            body["credential"]["name"] = hostile
        route.fulfill(response=response, json=body)

    context.route(HOSTILE_API, rename)
    w = Watched(context)
    page = w.page
    sign_in(page, operator_token)
    expect(page.locator("#orgs")).to_be_visible()
    page.goto(f"{admin}/ui#/orgs/{org}")
    link = page.locator("#credentials tbody tr").first.locator('[data-field="name"] a')
    expect(link).to_have_text(hostile)
    page.goto(f"{admin}/ui#/orgs/{org}/credentials/{cred}")
    expect(page.locator("main h1")).to_have_text(f"Credential {hostile}")
    expect(page.locator("#crumbs")).to_contain_text(hostile)
    expect(page.locator('#timeline tr[data-kind="created"]')).to_have_count(1)
    w.assert_clean("hostile credential name", allow=("401",))
    step("a credential named with hostile markup renders as text; no script ran")
    context.close()


def org_admin(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    context.add_init_script(WATCH)
    w = Watched(context)
    page = w.page
    sign_in(page, org_admin_token)
    expect(page.locator(f'#credentials tr[data-credential="{cred}"]')).to_be_visible()
    check(page.url.endswith(f"#/orgs/{org}"), f"an org admin did not land on its org: {page.url}")
    expect(page.locator("#who")).to_have_text("org admin")
    # The operator-only probe answers 403, which Chromium logs as a failed resource.
    w.assert_clean("org admin", allow=("401", "403"))
    step(f"an org-admin token goes straight to {org}")
    context.close()


def main():
    os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except PlaywrightError as err:
            fail(f"cannot start {chromium}: {err}")
        step(f"Chromium {browser.version}")
        try:
            operator_walk(browser)
            hostile_name(browser)
            org_admin(browser)
        finally:
            browser.close()
    step("OK")


if __name__ == "__main__":
    main()
