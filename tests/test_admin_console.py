"""The web admin console in a real browser: Debian's headless Chromium driven through
chromedriver by selenium, against a real server (the harness's), on real data.

Each test logs in as an admin through the console's login page and works a page the way an
admin would (typing, clicking, confirming), then checks through the admin API that the server
did what the page showed. Every page is saved as a screenshot in
``_trial_temp/console-screenshots/`` (beside the test run, not in the repository) for a person
to look at. The browser's own log must stay free of script errors and Content-Security-Policy
violations.

Selenium's calls block until the browser answers, and the browser talks to the server running
on this test's reactor: every browser step therefore runs in a thread
(:meth:`ConsoleTestCase.ui`) while the reactor keeps serving.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from tests.harness import C, TestUser, q
from tests.harness.appservice import AppServiceTestCase

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: the flags without which Chromium's connections are refused on a machine without a desktop
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1360,900", "--lang=en-GB",
)
#: seconds a browser step waits for the page to show what it expects
WAIT_S = 20
ADMIN = "/_synapse/admin"
#: where screenshots go, under the test run's working directory (trial's _trial_temp)
SCREENSHOTS = "console-screenshots"

T = TypeVar("T")


def browser_missing() -> str | None:
    """Why no browser can be driven here (None when everything is installed)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} missing: install Debian's chromium and chromium-driver (make chromium)"
    return None


class Browser:
    """One headless Chromium session on the console of the server at ``base_url``. Every
    method blocks: call them through :meth:`ConsoleTestCase.ui`."""

    def __init__(self, base_url: str, profile_dir: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile_dir}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base_url = base_url
        self.log: list[dict[str, Any]] = []

    def quit(self) -> None:
        self.driver.quit()

    # -- finding and waiting -----------------------------------------------------------------

    def wait(self, check: Callable[[Any], T], what: str, timeout: float = WAIT_S) -> T:
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            wait = WebDriverWait(self.driver, timeout, 0.1, ignored_exceptions=[StaleElementReferenceException])
            return wait.until(check)
        except TimeoutException:
            raise AssertionError(f"the page did not show {what}; it shows:\n{self.text('body')[:3000]}") from None

    def find(self, css: str, timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.common.by import By

        def found(d: Any) -> Any:
            els = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return els[0] if els else False

        return self.wait(found, css, timeout)

    def text(self, css: str) -> str:
        # In the page, in one step: the console redraws parts of itself while we read.
        return str(self.driver.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join('\\n')", css
        ))

    def wait_text(self, css: str, text: str, timeout: float = WAIT_S) -> str:
        def shown(d: Any) -> str | bool:
            t = self.text(css)
            return t if text in t else False

        return self.wait(shown, f"{text!r} in {css}", timeout)

    def button(self, label: str, within: str = "") -> Any:
        from selenium.webdriver.common.by import By

        xpath = f"//button[normalize-space()={_xpath_str(label)} and not(@disabled)]"

        def found(d: Any) -> Any:
            scope = d.find_element(By.CSS_SELECTOR, within) if within else d
            els = [e for e in scope.find_elements(By.XPATH, "." + xpath if within else xpath) if e.is_displayed()]
            return els[0] if els else False

        return self.wait(found, f"a {label!r} button" + (f" in {within}" if within else ""))

    # -- acting ------------------------------------------------------------------------------

    def open(self, route: str = "") -> None:
        self.driver.get(f"{self.base_url}/_mxserver/admin/" + (f"#{route}" if route else ""))

    def type(self, css: str, text: str, clear: bool = True) -> None:
        el = self.find(css)
        if clear:
            el.clear()
        el.send_keys(text)

    def click(self, label: str, within: str = "") -> None:
        self.button(label, within).click()

    def confirm(self, label: str, screenshot: str | None = None) -> None:
        """The confirmation dialog is open: (screenshot it and) press its ``label`` button."""
        self.find("dialog[open]")
        if screenshot:
            self.screenshot(screenshot)
        self.click(label, "dialog[open]")
        self.wait(lambda d: not d.find_elements("css selector", "dialog[open]"), "the dialog closed")

    def login(self, user: str, password: str) -> None:
        self.open()
        self.type("#login-form input[name=user]", user)
        self.type("#login-form input[name=password]", password)
        self.click("Log in")

    def screenshot(self, name: str) -> None:
        folder = os.path.abspath(SCREENSHOTS)
        os.makedirs(folder, exist_ok=True)
        # The whole page, not just the window: grow the window to the document's height.
        height = self.driver.execute_script("window.scrollTo(0, 0); return Math.max(document.body.scrollHeight, 900)")
        self.driver.set_window_size(1360, min(int(height) + 40, 4000))
        self.driver.save_screenshot(os.path.join(folder, f"{name}.png"))
        self.driver.set_window_size(1360, 900)

    def script(self, js: str) -> Any:
        return self.driver.execute_script(js)

    def problems(self) -> list[str]:
        """Script errors and CSP violations the browser logged (failed API calls the console
        handled, e.g. a refused login's 403, are not problems)."""
        self.log.extend(self.driver.get_log("browser"))
        return [
            e["message"]
            for e in self.log
            if "Content Security Policy" in e["message"] or "Uncaught" in e["message"] or "SyntaxError" in e["message"]
        ]


def _xpath_str(s: str) -> str:
    return f"'{s}'" if "'" not in s else f'"{s}"'


class ConsoleTestCase(AppServiceTestCase):
    """A server with an admin (``root``, password ``ADMIN_PW``), a plain user (``alice``), an
    application service (the harness's bridge), and a browser on its console (``self.browser``)."""

    ADMIN_PW = "admin password"

    async def _set_up(self) -> None:
        missing = browser_missing()
        if missing:
            raise unittest.SkipTest(missing)
        await super()._set_up()
        self.admin = await self.register("root", password=self.ADMIN_PW)
        await self.hs.accounts.set_admin(self.admin.user_id, True)
        self.alice = await self.register("alice")
        profile = tempfile.mkdtemp(prefix="mxserver-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        try:
            self.browser = await deferToThread(Browser, self.base_url, profile)
        except Exception as e:  # selenium's WebDriverException: the browser would not start
            raise unittest.SkipTest(f"Chromium could not be started through {CHROMEDRIVER}: {e}") from None
        self.addCleanup(deferToThread, self.browser.quit)
        self.addCleanup(self.no_browser_problems)

    async def ui(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one blocking browser step in a thread while the server keeps serving."""
        return await deferToThread(fn, *args)

    async def no_browser_problems(self) -> None:
        self.assertEqual(await self.ui(self.browser.problems), [])

    async def log_in_as_admin(self, route: str = "") -> None:
        b = self.browser
        await self.ui(b.login, "root", self.ADMIN_PW)
        await self.ui(b.wait_text, "#whoami", "@root:test")
        if route:
            await self.ui(b.open, route)

    def shot(self, name: str) -> Any:
        return self.ui(self.browser.screenshot, f"{type(self).__name__.replace('Postgres', '')}-{name}")

    async def admin_get(self, path: str) -> tuple[int, Any]:
        return await self.get(f"{ADMIN}{path}", self.admin)


def uq(user: TestUser | str) -> str:
    return q(user if isinstance(user, str) else user.user_id)


class LoginTests(ConsoleTestCase):
    async def test_login_refused_for_non_admins_and_bad_passwords(self) -> None:
        b = self.browser
        await self.ui(b.open)
        await self.ui(b.find, "#login-form")
        await self.shot("login")
        # A wrong password: the server's own error text.
        await self.ui(b.login, "root", "wrong")
        msg = await self.ui(b.wait_text, "#login-form [role=alert]", "M_FORBIDDEN")
        self.assertIn("Invalid", msg)
        # A user who is not an admin: refused with a clear message, and their new session is
        # logged out again (alice keeps only the device she registered with).
        await self.ui(b.login, "alice", "correct horse")
        msg = await self.ui(b.wait_text, "#login-form [role=alert]", "not a server admin")
        self.assertIn("@alice:test is not a server admin", msg)
        await self.shot("login-refused")
        self.assertEqual(await self.ui(b.script, "return sessionStorage.length"), 0)
        code, devices = await self.get(f"{C}/devices", self.alice)
        self.assertEqual([d["device_id"] for d in devices["devices"]], [self.alice.device_id])

    async def test_login_layout_and_logout(self) -> None:
        b = self.browser
        await self.log_in_as_admin()
        await self.ui(b.find, "nav.topnav a.active")
        nav = await self.ui(b.text, "nav.topnav ul")
        for title in ("Users", "Rooms", "Federation", "Appservices", "Media", "Reports", "Registration tokens", "Metrics"):
            self.assertIn(title, nav)
        self.assertIn("mxserver", await self.ui(b.text, ".whoami .version"))
        # The token lives in sessionStorage, never in a cookie.
        token = await self.ui(b.script, "return JSON.parse(sessionStorage.getItem('mxserver.admin.session')).access_token")
        self.assertEqual(await self.ui(b.script, "return document.cookie"), "")
        self.assertEqual(await self.ui(b.driver.get_cookies), [])
        self.assertEqual((await self.get(f"{C}/account/whoami", token))[1]["user_id"], "@root:test")
        # A reload keeps the session (same tab); logging out revokes the token.
        await self.ui(b.driver.refresh)
        await self.ui(b.wait_text, "#whoami", "@root:test")
        await self.ui(b.click, "Log out")
        await self.ui(b.find, "#login-form")
        self.assertMatrixError(await self.get(f"{C}/account/whoami", token), 401, "M_UNKNOWN_TOKEN")

    async def test_revoked_session_goes_back_to_login(self) -> None:
        b = self.browser
        await self.log_in_as_admin()
        token = await self.ui(b.script, "return JSON.parse(sessionStorage.getItem('mxserver.admin.session')).access_token")
        self.assertEqual((await self.post(f"{C}/logout", {}, token))[0], 200)
        # The next page's first API call finds the token gone: back to the login page, saying why.
        await self.ui(b.open, "/rooms")
        await self.ui(b.wait_text, "#login-form [role=alert]", "Your session ended")


class UsersPageTests(ConsoleTestCase):
    async def test_create_search_admin_reset_deactivate(self) -> None:
        b = self.browser
        await self.log_in_as_admin("/users")
        await self.ui(b.wait_text, "[data-table=users]", "@alice:test")
        await self.shot("users")
        # Create bob in the form.
        await self.ui(b.click, "Create user")
        await self.ui(b.type, "#create-user input[name=user_id]", "bob")
        await self.ui(b.type, "#create-user input[name=displayname]", "Bob the Builder")
        await self.ui(b.type, "#create-user input[name=password]", "bob's password")
        await self.shot("users-create")
        await self.ui(b.click, "Create", "#create-user")
        await self.ui(b.wait_text, "#user-status", "Created @bob:test")
        code, bob = await self.admin_get("/v2/users/@bob:test")
        self.assertEqual((code, bob["displayname"], bob["admin"], bob["deactivated"]), (200, "Bob the Builder", False, False))
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "bob's password"}
        self.assertEqual((await self.post(f"{C}/login", login))[0], 200)
        await self.shot("user-details")
        # The API's own error is shown: a user ID the server refuses.
        await self.ui(b.open, "/users")
        await self.ui(b.click, "Create user")
        await self.ui(b.type, "#create-user input[name=user_id]", "@Not Valid!:test")
        await self.ui(b.click, "Create", "#create-user")
        err = await self.ui(b.wait_text, "#create-user [role=alert]", "M_")
        self.assertRegex(err, r"\(M_[A-Z_]+\)")
        # Search finds bob by display name.
        await self.ui(b.type, "form.search input[name=name]", "Builder\n")
        await self.ui(b.wait_text, "[data-table=users]", "@bob:test")
        self.assertNotIn("@alice:test", await self.ui(b.text, "#users-results"))
        self.assertIn("1–1 of 1", await self.ui(b.text, ".pager-info"))
        await self.shot("users-search")
        # Make bob an admin (confirmed in the dialog).
        await self.ui(b.open, "/users/" + quote("@bob:test", safe=""))
        await self.ui(b.click, "Make admin")
        await self.ui(b.confirm, "Make admin", "Users-confirm-admin")
        await self.ui(b.wait_text, "#user-status", "is now a server admin")
        self.assertTrue((await self.admin_get("/v2/users/@bob:test"))[1]["admin"])
        # Reset bob's password: the new one works, the old one no longer does.
        await self.ui(b.type, "#reset-password input[name=new_password]", "new bob password")
        await self.ui(b.click, "Reset password", "#reset-password")
        await self.ui(b.confirm, "Reset password")
        await self.ui(b.wait_text, "#reset-password", "Password reset.")
        self.assertEqual((await self.post(f"{C}/login", {**login, "password": "new bob password"}))[0], 200)
        self.assertMatrixError(await self.post(f"{C}/login", login), 403, "M_FORBIDDEN")
        # Deactivate: cancelling does nothing, confirming deactivates.
        await self.ui(b.click, "Deactivate", "#deactivate-user")
        await self.ui(b.confirm, "Cancel")
        self.assertFalse((await self.admin_get("/v2/users/@bob:test"))[1]["deactivated"])
        await self.ui(b.click, "Deactivate", "#deactivate-user")
        await self.ui(b.confirm, "Deactivate", "Users-confirm-deactivate")
        await self.ui(b.wait_text, "#user-status", "was deactivated")
        self.assertTrue((await self.admin_get("/v2/users/@bob:test"))[1]["deactivated"])
        await self.shot("user-deactivated")
        # Deactivated users are listed only when asked for.
        await self.ui(b.open, "/users?name=bob")
        await self.ui(b.wait_text, "#users-results", "No user matches")
        await self.ui(b.open, "/users?name=bob&deactivated=true")
        await self.ui(b.wait_text, "[data-table=users]", "deactivated")


class RoomsPageTests(ConsoleTestCase):
    async def test_search_details_members_and_delete_with_progress(self) -> None:
        b = self.browser
        bob = await self.register("bob")
        room = await self.create_room(self.alice, preset="public_chat", name="Console Room", topic="Rooms page test",
                                      room_alias_name="console")
        await self.join(bob, room)
        other = await self.create_room(self.alice, name="Elsewhere")
        await self.send_message(self.alice, room, "hello")
        await self.log_in_as_admin("/rooms")
        await self.ui(b.wait_text, "[data-table=rooms]", "Elsewhere")
        await self.shot("rooms")
        # Search by name: only the matching room.
        await self.ui(b.type, "form.search input[name=search_term]", "Console\n")
        await self.ui(b.wait_text, "[data-table=rooms]", "Console Room")
        listed = await self.ui(b.text, "#rooms-results")
        self.assertIn("#console:test", listed)
        self.assertNotIn("Elsewhere", listed)
        await self.shot("rooms-search")
        # The room's details and members.
        await self.ui(lambda: b.driver.find_element("link text", "Console Room").click())
        await self.ui(b.wait_text, ".details", "Rooms page test")
        info = await self.ui(b.text, ".details")
        self.assertIn("2 joined (2 local)", info)
        self.assertIn(room, info)
        members = await self.ui(b.text, "[data-table=members]")
        self.assertIn("@alice:test", members)
        self.assertIn("@bob:test", members)
        await self.shot("room-details")
        # Delete it: confirmed, then the page follows delete_status until complete.
        await self.ui(b.click, "Delete room", "#delete-room")
        await self.ui(b.confirm, "Delete room", "Rooms-confirm-delete")
        await self.ui(b.find, "#delete-progress")
        await self.ui(b.wait, lambda d: d.find_element("css selector", "#delete-progress").get_attribute("data-status") == "complete",
                      "the deletion complete")
        done = await self.ui(b.text, "#delete-progress")
        self.assertIn("The room was deleted.", done)
        self.assertIn("@alice:test", done)  # removed users
        self.assertIn("no longer exists", await self.ui(b.text, "main"))
        await self.shot("room-deleted")
        self.assertMatrixError(await self.admin_get(f"/v1/rooms/{q(room)}"), 404, "M_NOT_FOUND")
        code, status = await self.admin_get(f"/v2/rooms/{q(room)}/delete_status")
        self.assertEqual((code, [r["status"] for r in status["results"]]), (200, ["complete"]))
        # The list no longer has it; the other room is untouched.
        await self.ui(b.open, "/rooms")
        await self.ui(b.wait_text, "[data-table=rooms]", "Elsewhere")
        self.assertNotIn("Console Room", await self.ui(b.text, "#rooms-results"))
        self.assertEqual((await self.admin_get(f"/v1/rooms/{q(other)}"))[0], 200)

    async def test_block_and_purge_history(self) -> None:
        b = self.browser
        room = await self.create_room(self.alice, preset="public_chat", name="Old Room")
        await self.send_message(self.alice, room, "old news")
        await self.send_message(self.alice, room, "latest")  # the forward extremity: a purge keeps it
        await self.log_in_as_admin("/rooms/" + quote(room, safe=""))
        await self.ui(b.wait_text, ".details", "Old Room")
        # Block: bob can no longer join.
        await self.ui(b.click, "Block")
        await self.ui(b.confirm, "Block")
        await self.ui(b.wait_text, "#room-status", "Room blocked.")
        code, block = await self.admin_get(f"/v1/rooms/{q(room)}/block")
        self.assertEqual((code, block["block"], block.get("user_id")), (200, True, "@root:test"))
        bob = await self.register("bob")
        self.assertEqual((await self.post(f"{C}/join/{q(room)}", {}, bob))[0], 403)
        await self.ui(b.click, "Unblock")
        await self.ui(b.confirm, "Unblock")
        await self.ui(b.wait_text, "#room-status", "Room unblocked.")
        self.assertFalse((await self.admin_get(f"/v1/rooms/{q(room)}/block"))[1]["block"])
        # Purge everything before now (0 days), local senders' messages included: followed to complete.
        await self.ui(b.type, "#purge-history input[name=days]", "0")
        await self.ui(lambda: b.find("#purge-history input[name=delete_local_events]").click())
        await self.ui(b.click, "Purge history", "#purge-history")
        await self.ui(b.confirm, "Purge", "Rooms-confirm-purge")
        await self.ui(b.wait, lambda d: d.find_element("css selector", "#purge-progress").get_attribute("data-status") == "complete",
                      "the purge complete")
        await self.shot("room-purged")
        self.assertEqual(await self.visible_bodies(self.alice, room), ["latest"])

    async def test_order_and_paging(self) -> None:
        b = self.browser
        for i in range(23):
            await self.create_room(self.alice, name=f"Room {i:02d}")
        await self.log_in_as_admin("/rooms?order_by=name")
        await self.ui(b.wait_text, ".pager-info", "1–20 of 23")
        await self.ui(b.click, "Next ›")
        await self.ui(b.wait_text, ".pager-info", "21–23 of 23")
        self.assertIn("Room 22", await self.ui(b.text, "[data-table=rooms]"))
        self.assertNotIn("Room 00", await self.ui(b.text, "[data-table=rooms]"))
        await self.ui(b.click, "‹ Previous")
        await self.ui(b.wait_text, ".pager-info", "1–20 of 23")
        self.assertIn("Room 00", await self.ui(b.text, "[data-table=rooms]"))


class FederationPageTests(ConsoleTestCase):
    async def destination(self, name: str) -> dict[str, Any] | None:
        code, body = await self.get("/_mxserver/admin/v1/federation/destinations", self.admin)
        return next((d for d in body["destinations"] if d["destination"] == name), None)

    async def backing_off(self, name: str, after_failure: int = 0) -> dict[str, Any]:
        """Wait until the sender failed to reach ``name`` (after ``after_failure``, ms) and backs off."""
        for _ in range(200):
            d = await self.destination(name)
            if d is not None and d["backing_off"] and (d["failure_ts"] or 0) > after_failure:
                return d
            await deferToThread(lambda: __import__("time").sleep(0.05))
        raise AssertionError(f"{name} never failed: {d}")

    async def test_destinations_and_reset(self) -> None:
        from mxserver.rooms.room_server import EventSpec

        b = self.browser
        room = await self.create_room(self.alice, preset="public_chat", name="Federated")
        # A remote member (built locally): the sender must send there, and remote.example
        # does not resolve here, so it fails and backs off.
        await self.hs.room_server.send(room, EventSpec("m.room.member", {"membership": "join"}, "@bob:remote.example",
                                                       "@bob:remote.example"))
        await self.send_message(self.alice, room, "to the remote server")
        before = await self.backing_off("remote.example")
        await self.log_in_as_admin("/federation")
        await self.ui(b.wait_text, "[data-table=destinations]", "remote.example")
        row = await self.ui(b.text, "[data-table=destinations] tbody tr")
        self.assertIn("backing off", row)
        await self.shot("federation")
        # Search.
        await self.ui(b.type, "form.search input[name=destination]", "nothing-here\n")
        await self.ui(b.wait_text, "#destinations", "No destination matches")
        await self.ui(b.type, "form.search input[name=destination]", "remote\n")
        await self.ui(b.wait_text, "[data-table=destinations]", "remote.example")
        # Reset: the backoff ends and the sender tries again at once (and fails again here,
        # later than before).
        await self.ui(b.click, "Reset", "[data-table=destinations]")
        await self.ui(b.confirm, "Reset", "Federation-confirm-reset")
        await self.ui(b.wait_text, "#federation-status", "The connection to remote.example was reset.")
        after = await self.backing_off("remote.example", after_failure=before["failure_ts"])
        # ... before the retry the backoff had planned.
        self.assertLess(after["failure_ts"], before["next_retry_ts"])


class AppservicesPageTests(ConsoleTestCase):
    async def test_state_and_reload(self) -> None:
        from tests.harness.appservice import registration

        b = self.browser
        await self.log_in_as_admin("/appservices")
        await self.ui(b.wait_text, "[data-table=appservices]", "bridge")
        row = await self.ui(b.text, "[data-table=appservices] tbody tr")
        self.assertIn(self.appservice.url, row)
        self.assertIn("ok", row)
        await self.shot("appservices")
        # A changed registration file, reloaded from the page.
        self.write_registration(0, registration(self.appservice.url, rate_limited=True))
        await self.ui(b.click, "Reload registrations")
        await self.ui(b.confirm, "Reload")
        msg = await self.ui(b.wait_text, "#appservices-status", "Registrations reloaded")
        self.assertIn("changed: bridge", msg)
        # A registration the server refuses: its error is shown.
        self.write_registration(0, {"id": "bridge"})
        await self.ui(b.click, "Reload registrations")
        await self.ui(b.confirm, "Reload")
        await self.ui(b.wait_text, "#appservices-status [role=alert]", "M_INVALID_PARAM")
        await self.shot("appservices-error")


class MediaPageTests(ConsoleTestCase):
    async def upload(self, data: bytes, filename: str) -> str:
        code, body = await self.request("POST", f"/_matrix/media/v3/upload?filename={q(filename)}", raw=data,
                                        token=self.alice, headers={"Content-Type": "text/plain"})
        self.assertEqual(code, 200, body)
        return str(body["content_uri"]).rsplit("/", 1)[1]

    async def download(self, media_id: str) -> int:
        return (await self.get(f"/_matrix/client/v1/media/download/test/{media_id}", self.alice))[0]

    async def test_list_quarantine_and_delete(self) -> None:
        b = self.browser
        first = await self.upload(b"first file", "first.txt")
        second = await self.upload(b"second file", "second.txt")
        self.assertEqual(await self.download(first), 200)
        await self.log_in_as_admin("/media")
        await self.ui(b.type, "form.search input[name=user_id]", "@alice:test\n")
        await self.ui(b.wait_text, "[data-table=media]", "first.txt")
        self.assertIn("second.txt", await self.ui(b.text, "[data-table=media]"))
        await self.shot("media")
        # Quarantine the first from the list.
        await self.ui(lambda: b.find(f"button[data-media='{first}']").click())
        await self.ui(b.confirm, "Quarantine", "Media-confirm-quarantine")
        await self.ui(b.wait_text, "#media-status", f"mxc://test/{first} quarantined.")
        await self.ui(b.wait_text, "[data-table=media]", "quarantined by @root:test")
        code, listed = await self.admin_get(f"/v1/users/{uq(self.alice)}/media")
        by_id = {m["media_id"]: m for m in listed["media"]}
        self.assertEqual((by_id[first]["quarantined_by"], by_id[second]["quarantined_by"]), ("@root:test", None))
        self.assertEqual(await self.download(first), 404)
        await self.shot("media-quarantined")
        # Delete the second by its URI.
        await self.ui(b.type, "#media-by-uri input[name=uri]", f"mxc://test/{second}")
        await self.ui(b.click, "Delete", "#media-by-uri")
        await self.ui(b.confirm, "Delete")
        await self.ui(b.wait_text, "#media-status", f"mxc://test/{second} deleted.")
        code, listed = await self.admin_get(f"/v1/users/{uq(self.alice)}/media")
        self.assertEqual([m["media_id"] for m in listed["media"]], [first])
        self.assertEqual(await self.download(second), 404)
        # A malformed URI is refused in the page.
        await self.ui(b.type, "#media-by-uri input[name=uri]", "not a uri")
        await self.ui(b.click, "Quarantine", "#media-by-uri")
        await self.ui(b.wait_text, "#media-by-uri [role=alert]", "Enter a media URI")


class ReportsPageTests(ConsoleTestCase):
    async def test_list_details_and_delete(self) -> None:
        b = self.browser
        bob = await self.register("bob")
        room = await self.create_room(self.alice, preset="public_chat", name="Reported Room")
        await self.join(bob, room)
        event_id = await self.send_message(bob, room, "something rude")
        code, body = await self.post(f"{C}/rooms/{q(room)}/report/{q(event_id)}", {"reason": "rude words", "score": -100},
                                     self.alice)
        self.assertEqual(code, 200, body)
        await self.log_in_as_admin("/reports")
        await self.ui(b.wait_text, "[data-table=reports]", "rude words")
        row = await self.ui(b.text, "[data-table=reports] tbody tr")
        for expected in ("Reported Room", "@alice:test", "@bob:test", "-100"):
            self.assertIn(expected, row)
        await self.shot("reports")
        (report,) = (await self.admin_get("/v1/event_reports"))[1]["event_reports"]
        await self.ui(lambda: b.driver.find_element("link text", str(report["id"])).click())
        await self.ui(b.wait_text, "pre.json", "something rude")
        self.assertIn(event_id, await self.ui(b.text, ".details"))
        await self.shot("report-details")
        await self.ui(b.click, "Delete report")
        await self.ui(b.confirm, "Delete report")
        await self.ui(b.wait_text, "#reports-status", f"Report {report['id']} deleted.")
        await self.ui(b.wait_text, "#reports", "No reports.")
        self.assertEqual((await self.admin_get("/v1/event_reports"))[1]["total"], 0)


class TokensPageTests(ConsoleTestCase):
    async def test_create_list_delete(self) -> None:
        b = self.browser
        await self.log_in_as_admin("/tokens")
        await self.ui(b.wait_text, "#tokens", "No registration tokens.")
        await self.ui(b.type, "#create-token input[name=token]", "console-token")
        await self.ui(b.type, "#create-token input[name=uses_allowed]", "3")
        await self.ui(b.click, "Create token")
        await self.ui(b.wait_text, "#tokens-status", "Token console-token created.")
        await self.ui(b.wait_text, "[data-table=tokens]", "console-token")
        code, token = await self.admin_get("/v1/registration_tokens/console-token")
        self.assertEqual((code, token["uses_allowed"], token["pending"], token["completed"]), (200, 3, 0, 0))
        # A random one, and the server's refusal of a duplicate shown as its error.
        await self.ui(b.click, "Create token")
        await self.ui(b.wait_text, "#tokens-status", "created.")
        self.assertEqual(len((await self.admin_get("/v1/registration_tokens"))[1]["registration_tokens"]), 2)
        await self.ui(b.type, "#create-token input[name=token]", "console-token")
        await self.ui(b.click, "Create token")
        await self.ui(b.wait_text, "#create-token [role=alert]", "M_")
        await self.shot("tokens")
        await self.ui(lambda: b.find("button[data-token='console-token']").click())
        await self.ui(b.confirm, "Delete token", "Tokens-confirm-delete")
        await self.ui(b.wait_text, "#tokens-status", "Token console-token deleted.")
        self.assertNotIn("console-token", await self.ui(b.text, "[data-table=tokens]"))
        self.assertMatrixError(await self.admin_get("/v1/registration_tokens/console-token"), 404, "M_NOT_FOUND")


class MetricsPageTests(ConsoleTestCase):
    async def test_live_figures(self) -> None:
        b = self.browser
        await self.log_in_as_admin("/metrics?every=1")
        await self.ui(b.wait_text, "#figures", "HTTP requests / s")
        # It keeps reading: the figures update on their own.
        await self.ui(b.wait, lambda d: int(d.find_element("css selector", "#metrics-live").get_attribute("data-updates") or 0) >= 3,
                      "three readings")
        figures = await self.ui(b.text, "#figures")
        for label in ("Mean request time", "DB transactions / s", "Reactor lag", "Federation PDUs queued", "Appservice queue"):
            self.assertIn(label, figures)
        self.assertIn("mxserver_http_requests_total", await self.ui(b.text, "[data-table=metrics]"))
        await self.shot("metrics")
        # The table filters as one types.
        await self.ui(b.type, "input[name=filter]", "reactor_lag")
        await self.ui(b.wait, lambda d: "mxserver_http_requests_total" not in self_text(d, "[data-table=metrics]"), "the filtered table")
        self.assertIn("mxserver_reactor_lag_seconds", await self.ui(b.text, "[data-table=metrics]"))
        # Paused, it stops reading.
        await self.ui(b.click, "Pause")
        seen = int(await self.ui(b.script, "return document.getElementById('metrics-live').dataset.updates"))
        await deferToThread(__import__("time").sleep, 2.5)
        self.assertLessEqual(int(await self.ui(b.script, "return document.getElementById('metrics-live').dataset.updates")), seen + 1)


class WorkersPageTests(ConsoleTestCase):
    async def test_processes_listed(self) -> None:
        b = self.browser
        # A worker recorded long ago (dead) beside this process (main, alive).
        await self.hs.worker_registry.store.record_start("sync1", "sync", 4242, 1_000)
        await self.log_in_as_admin("/workers")
        await self.ui(b.wait_text, "[data-table=workers]", "sync1")
        text = await self.ui(b.text, "[data-table=workers]")
        for expected in ("main", "alive", str(os.getpid()), "sync1", "sync", "not seen", "4242"):
            self.assertIn(expected, text)
        await self.shot("workers")


def self_text(driver: Any, css: str) -> str:
    return str(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText).join('\\n')", css))


class SafetyTests(ConsoleTestCase):
    async def test_server_data_is_text_never_markup(self) -> None:
        b = self.browser
        evil = '<img src=x onerror="window.__xss=1"><b>bold</b>'
        await self.set_profile(self.alice, displayname=evil)
        await self.log_in_as_admin("/users")
        await self.ui(b.wait_text, "[data-table=users]", evil)
        self.assertIsNone(await self.ui(b.script, "return window.__xss"))
        self.assertEqual(await self.ui(b.script, "return document.querySelectorAll('main img, main b').length"), 0)

    async def test_content_security_policy_blocks_inline_script(self) -> None:
        b = self.browser
        await self.log_in_as_admin("/users")
        await self.ui(b.wait_text, "[data-table=users]", "@alice:test")
        # A script element with inline code (what an injection would add) does not run.
        await self.ui(b.script, "const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
                                " document.body.append(s);")
        self.assertIsNone(await self.ui(b.script, "return window.__inline"))
        problems = await self.ui(b.problems)
        self.assertTrue(problems and all("Content Security Policy" in p for p in problems), problems)
        b.log.clear()  # the violation was the point of this test
