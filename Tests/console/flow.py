"""The console in a real Chromium, as a person clicks through it (no JavaScript needed by the pages).

Usage: flow.py BASE_URL USER PASSWORD PROJECT SCREENSHOT_DIR

login -> projects -> project -> pick image and flavor -> name -> create -> running -> bill -> suspend -> resume
-> stop -> delete,
a screenshot per step in SCREENSHOT_DIR. Exits 1 with the reason when a step does not show what it should.
"""

import os
import sys
import time

from playwright.sync_api import sync_playwright


def main() -> int:
    base, user, password, project, shots = sys.argv[1:6]
    os.makedirs(shots, exist_ok=True)
    step = [0]

    def shot(page, name):
        step[0] += 1
        page.screenshot(path=os.path.join(shots, f"{step[0]:02d}-{name}.png"), full_page=True)

    def wait_for_state(page, state, timeout=40):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if page.inner_text("#state").strip() == state:
                return
            time.sleep(0.5)
            page.reload()
        raise AssertionError(f"the guest did not become {state}: {page.inner_text('#state')}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        # The pages work without JavaScript: prove it by turning it off.
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto(base + "/console")
        assert page.url.endswith("/console/login"), f"not sent to the login page: {page.url}"
        shot(page, "login")
        page.fill("input[name=name]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        assert page.url.endswith("/console"), f"the login did not lead to the projects: {page.url}"
        shot(page, "projects")
        page.click(f"a[href='/console/projects/{project}']")
        shot(page, "project")
        page.check("input[name=image]")
        page.check("input[name=flavor]")
        page.fill("input[name=name]", "browser-web")
        shot(page, "configured")
        page.click("text=Create guest")
        assert "/console/guests/" in page.url, f"the create did not lead to the guest: {page.url}"
        shot(page, "created")
        wait_for_state(page, "running")
        shot(page, "running")
        time.sleep(1.5)
        page.reload()
        seconds = float(page.inner_text("#bill-seconds"))
        assert seconds > 0, f"a running guest's bill shows {seconds} s"
        shot(page, "bill")
        page.click("button:text-is('Suspend')")
        assert page.url.endswith("?done=suspend"), f"the suspend did not lead to its notice: {page.url}"
        wait_for_state(page, "suspended")
        notice = page.inner_text(".notice")
        assert notice.startswith("Suspended"), f"the suspend's notice: {notice}"
        assert page.locator("button:text-is('Suspend')").count() == 0, "a suspended guest is offered suspend"
        shot(page, "suspended")
        page.click("button:text-is('Resume')")
        assert page.url.endswith("?done=resume"), f"the resume did not lead to its notice: {page.url}"
        assert page.inner_text(".notice").startswith("Resuming"), f"the resume's notice: {page.inner_text('.notice')}"
        shot(page, "resuming")
        wait_for_state(page, "running")
        shot(page, "resumed")
        page.click("button:text-is('Stop')")
        wait_for_state(page, "stopped")
        shot(page, "stopped")
        page.click("button:text-is('Delete')")
        assert page.url.endswith(f"/console/projects/{project}"), f"the delete did not lead to the project: {page.url}"
        assert "browser-web" not in page.inner_text("main"), "the deleted guest is still listed"
        shot(page, "deleted")
        browser.close()
    print(f"ok: {step[0]} screenshots in {shots}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as error:
        print(f"failed: {error}", file=sys.stderr)
        sys.exit(1)
