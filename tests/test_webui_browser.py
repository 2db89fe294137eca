"""The dashboard in a real browser: Debian's chromium driven by Playwright against the real
`maltrail server`, over the logs of a generated capture replayed through `maltrail sensor`.

What an analyst does: log in, see the threats of the replay, filter by search, open a threat and
its raw events, watch a live event arrive, triage, suppress, export, switch theme. A screenshot
of the main view is saved to test-artifacts/dashboard.png.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from webui_browser_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DEMO_TRAIL_IPS,
    ApiClient,
    add_user,
    append_event,
    chromium_missing_reason,
    free_port,
    log_pairs,
    replay_capture,
    start_server,
    stop_server,
)

from engine.eventlog import format_event, log_date

_missing = chromium_missing_reason()
pytestmark = pytest.mark.skipif(_missing is not None, reason=_missing or "")
if _missing is None:
    from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
USER = "analyst"
PASSWORD = "correct horse battery"
ADMIN = "boss"
PACKETS = 120_000


class Dashboard:
    """The running server and what the tests need to know about its data."""

    def __init__(self, url: str, log_dir: Path, api: ApiClient) -> None:
        self.url = url
        self.log_dir = log_dir
        self.api = api

    def pairs(self) -> dict[tuple[str, str], int]:
        return log_pairs(self.log_dir)


def _wait_past_midnight() -> None:
    """Keep the replay, the live event and the default 'today' view on one calendar day."""
    now = dt.datetime.now()
    left = (dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time()) - now).total_seconds()
    if left < 240:
        time.sleep(left + 2)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    _wait_past_midnight()
    work = tmp_path_factory.mktemp("webui-browser")
    log_dir = work / "logs"
    now = time.time()
    midnight = dt.datetime.combine(dt.date.today(), dt.time()).timestamp()
    # Two different captures replayed earlier today, so the timeline has more than one bar.
    for seed, start in enumerate(sorted({int(midnight + (now - midnight) * 0.3), int(now - 90)}), start=11):
        replay_capture(work, log_dir, PACKETS, start, seed)
    users = work / "users.json"
    add_user(users, USER, PASSWORD)
    add_user(users, ADMIN, PASSWORD, "--role", "admin")
    # These tests count threats as (source, trail) pairs; the replay has trails from more than
    # 50 sources, which Maltrail's flood grouping would merge (its own tests: test_flood_*).
    config = work / "server.toml"
    config.write_text("[server]\nflood_sources = 0\n")
    port = free_port()
    proc = start_server(log_dir, users, port, work / "server.log", "-c", str(config))
    try:
        url = f"http://127.0.0.1:{port}"
        api = ApiClient(url, USER, PASSWORD)
        api.wait_for_total(len(log_pairs(log_dir)))
        yield Dashboard(url, log_dir, api)
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    """Browser-side errors: uncaught exceptions and console errors (CSP violations land there)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))

    def unexpected(self, *allowed: int) -> list[str]:
        """Errors other than refused loads with the `allowed` statuses; the browser logs every non-2xx load,
        and the session probe before login answers 401 by design."""
        statuses = {401, *allowed}
        return [e for e in self.errors if not any(f"status of {s} " in e for s in statuses)]


@pytest.fixture()
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, color_scheme="dark")
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


def login(context: BrowserContext, dashboard: Dashboard, user: str = USER) -> tuple[Page, Console]:
    page = context.new_page()
    console = Console(page)
    page.goto(dashboard.url + "/")
    page.fill("#login-user", user)
    page.fill("#login-pass", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#threats-body tr").first).to_be_visible()
    return page, console


def shown_total(page: Page) -> int:
    return int(page.inner_text("#threat-total").replace(",", ""))


def expect_total(page: Page, expected: int) -> None:
    expect(page.locator("#threat-total")).to_have_text(f"{expected:,}")


def test_login_then_threats_of_the_replay(context: BrowserContext, dashboard: Dashboard) -> None:
    page = context.new_page()
    console = Console(page)
    page.goto(dashboard.url + "/")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    page.fill("#login-user", USER)
    page.fill("#login-pass", "not the password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    page.fill("#login-pass", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text(USER)

    pairs = dashboard.pairs()
    expect_total(page, len(pairs))
    trails = page.locator("#threats-body td.c-trail").all_inner_texts()
    assert len(trails) == min(50, len(pairs)) and set(trails) <= set(DEMO_TRAIL_IPS)
    top_trails = page.locator("#chart-trails .bar-label").all_inner_texts()
    assert set(top_trails) == {t for _, t in pairs}
    events = sum(pairs.values())
    expect(page.locator("#timeline-total")).to_have_text(f"{events:,} events")
    assert page.locator("#chart-timeline rect.seg").count() >= 1
    # Sorting by events puts the busiest (source, trail) first.
    page.click("#threats-head button[data-sort='count']")
    expect(page.locator("#threats-body tr").first.locator("td.c-num")).to_have_text(f"{max(pairs.values()):,}")
    assert console.unexpected() == []


def test_search_filters_with_chips(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    pairs = dashboard.pairs()
    trail = DEMO_TRAIL_IPS[2]
    with_trail = sum(1 for _, t in pairs if t == trail)
    page.fill("#search-input", f"trail:{trail}")
    page.press("#search-input", "Enter")
    expect(page.locator("#chips .chip")).to_have_count(1)
    expect_total(page, with_trail)
    assert set(page.locator("#threats-body td.c-trail").all_inner_texts()) == {trail}
    assert f"q=trail%3A{trail}" in page.url
    # Clicking the chip negates it.
    page.click("#chips .chip-body")
    expect(page.locator("#chips .chip-neg")).to_have_count(1)
    expect_total(page, len(pairs) - with_trail)
    assert trail not in page.locator("#threats-body td.c-trail").all_inner_texts()
    # A token the server refuses is reported, naming it.
    page.fill("#search-input", "port:http")
    page.press("#search-input", "Enter")
    expect(page.locator("#view-note")).to_contain_text("port:http")
    expect(page.locator("#chips .chip-bad")).to_have_count(1)
    page.click("#chips .chip-clear")
    expect(page.locator("#chips .chip")).to_have_count(0)
    expect_total(page, len(pairs))
    # Severity pill and a chart bar add filters too.
    page.click("#sev-pills button[data-sev='high']")
    expect(page.locator("#chips .chip")).to_have_count(1)
    high = dashboard.api.get("/api/threats", q="sev:high", per_page=1)["total"]
    expect_total(page, high)
    assert set(page.locator("#threats-body td.c-sev").all_inner_texts()) == {"HIGH"}
    # A value in the table: its menu excludes it.
    page.locator("#threats-body tr").first.locator("td.c-port .val").click()
    page.click("#value-menu button:has-text('Exclude this value')")
    expect(page.locator("#chips .chip-neg")).to_have_count(1)
    assert page.locator("#chips .chip-neg").inner_text().startswith("NOT")
    assert console.unexpected(400) == []  # the refused search


def test_threat_drawer_raw_events_and_pivot(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    page.click("#threats-head button[data-sort='count']")
    first = page.locator("#threats-body tr").first
    expect(first.locator("td.c-num")).to_have_text(f"{max(dashboard.pairs().values()):,}")
    src = first.locator("td.c-ip").first.inner_text()
    trail = first.locator("td.c-trail").inner_text()
    count = dashboard.pairs()[(src, trail)]
    first.locator("td.c-sev").click()
    expect(page.locator("#drawer")).to_be_visible()
    expect(page.locator("#drawer-title")).to_have_text(trail)
    rows = page.locator("#drawer-events tbody tr")
    expect(rows).to_have_count(min(count, 200))
    sources = {r.split("\t")[1] for r in rows.all_inner_texts()}
    assert all(s.startswith(src) for s in sources)
    # Newest first.
    times = [r.split("\t")[0] for r in rows.all_inner_texts()]
    assert times == sorted(times, reverse=True)
    page.click("#pivot-source")
    expect(page.locator("#drawer")).to_be_hidden()
    expect(page.locator("#chips .chip")).to_have_count(1)
    expect_total(page, sum(1 for s, _ in dashboard.pairs() if s == src))
    assert set(page.locator("#threats-body td.c-ip").all_inner_texts()[::2]) == {src}
    assert console.unexpected() == []


def test_search_or_groups_and_a_refused_search_clears_the_rows(context: BrowserContext,
                                                                 dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    pairs = dashboard.pairs()
    a, b = sorted({s for s, _ in pairs})[:2]
    page.fill("#search-input", f"src:{a} OR src:{b}")
    page.press("#search-input", "Enter")
    expect(page.locator("#chips .chip")).to_have_count(1)  # one expression, one chip
    expect_total(page, sum(1 for s, _ in pairs if s in (a, b)))
    assert set(page.locator("#threats-body td.c-ip").all_inner_texts()[::2]) == {a, b}
    page.fill("#search-input", "count:>x")
    page.press("#search-input", "Enter")
    expect(page.locator("#view-note")).to_contain_text("count:>x")
    expect(page.locator("#threats-body tr")).to_have_count(0)  # no stale rows under the new chips
    expect(page.locator("#threat-total")).to_have_text("–")
    assert console.unexpected(400) == []


def test_live_event_appears_without_reload(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    expect(page.locator("#live-btn")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#live-state")).to_have_text("connected")
    page.evaluate("window.__noReload = true")
    before = shown_total(page)
    now = time.time()
    append_event(dashboard.log_dir, (int(now), int(now % 1 * 1e6), "10.66.0.7", 53001, "10.0.0.53", 53, "UDP",
                                     "DNS", "evil-demo.example", "malware (demo)", "(static)"), "browser-test")
    feed = page.locator("#live-feed .feed-item").first
    expect(feed).to_contain_text("evil-demo.example")
    expect(feed).to_contain_text("10.66.0.7")
    expect(page.locator("#threats-body tr", has_text="evil-demo.example")).to_have_count(1)
    expect_total(page, before + 1)
    expect(page.locator("#legend-timeline")).to_contain_text("DNS")
    assert page.evaluate("window.__noReload") is True
    assert console.unexpected() == []


def _view_requests_from_now(page: Page, row: Locator, count: int) -> list[str]:
    """Once the row shows `count` and the clock is clear of a full-refresh boundary: the list of
    whole-view requests (threats, stats) the page makes from now on."""
    expect(row.locator("td.c-num")).to_have_text(f"{count:,}")
    while not 2_000 < time.time() * 1000 % 30_000 < 20_000:
        time.sleep(0.5)
    asked: list[str] = []
    page.on("request", lambda r: ("/api/threats" in r.url or "/api/stats" in r.url) and asked.append(r.url))
    return asked


def test_live_event_updates_its_row_in_place(context: BrowserContext, dashboard: Dashboard) -> None:
    """An event of a threat already on screen is folded into its row and the charts from the
    stream alone: the page does not ask for the whole view again (that waits for the shared
    30-second boundary)."""
    page, console = login(context, dashboard)
    expect(page.locator("#live-state")).to_have_text("connected")
    top = dashboard.api.get("/api/threats", per_page=1)["rows"][0]
    row = page.locator(f"#threats-body tr[data-id='{top['id']}']")
    asked = _view_requests_from_now(page, row, top["count"])
    now = time.time()
    port = top["dst_port"] if isinstance(top["dst_port"], int) else None
    append_event(dashboard.log_dir, (int(now), 5, top["src_ip"], 40001, top["dst_ip"], port, top["proto"],
                                     top["type"], top["trail"], top["info"], top["reference"]), "delta-test")
    expect(row.locator("td.c-num")).to_have_text(f"{top['count'] + 1:,}", timeout=10_000)
    assert asked == []
    assert console.unexpected() == []


def test_scoped_live_event_updates_its_row_in_place(context: BrowserContext, dashboard: Dashboard) -> None:
    """A user limited to one source network gets its own events over the stream and folds them into
    its rows in place, like a global user, without asking for the view again; an event outside its
    scope never reaches the page."""
    top = dashboard.api.get("/api/threats", per_page=1)["rows"][0]
    boss = ApiClient(dashboard.url, ADMIN, PASSWORD)
    boss.post("/api/users", {"name": "tenant", "password": PASSWORD, "role": "viewer", "scope": [top["src_ip"]]})
    page, console = login(context, dashboard, "tenant")
    expect(page.locator("#live-state")).to_have_text("connected")
    row = page.locator(f"#threats-body tr[data-id='{top['id']}']")
    asked = _view_requests_from_now(page, row, top["count"])
    now = time.time()
    port = top["dst_port"] if isinstance(top["dst_port"], int) else None
    outside = "10.99.99.99" if top["src_ip"] != "10.99.99.99" else "10.99.99.98"
    for second, src, marker in ((now, outside, "out-of-scope"), (now + 0.5, top["src_ip"], top["info"])):
        append_event(dashboard.log_dir, (int(second), 7, src, 40002, top["dst_ip"], port, top["proto"], top["type"],
                                         top["trail"], marker, top["reference"]), "scoped-delta")
    expect(row.locator("td.c-num")).to_have_text(f"{top['count'] + 1:,}", timeout=10_000)
    expect(page.locator("#live-feed .feed-item")).to_have_count(1)
    expect(page.locator("#live-feed")).not_to_contain_text("out-of-scope")
    assert asked == []
    assert console.unexpected() == []


def test_hostile_fields_render_as_text(context: BrowserContext, dashboard: Dashboard) -> None:
    """Every field is network data: markup in it must show as text, never become elements."""
    page, console = login(context, dashboard)
    expect(page.locator("#live-state")).to_have_text("connected")
    trail = '<img src=x onerror="window.__xss=1">.example'
    info = '<script>window.__xss=2</script> "quoted" & <b>bold</b>'
    now = time.time()
    append_event(dashboard.log_dir, (int(now), 0, "10.66.0.8", 40000, "198.18.0.9", 80, "TCP", "URL", trail, info,
                                     "<i>ref</i>"), "<svg onload=alert(1)>")
    row = page.locator("#threats-body tr", has_text="10.66.0.8")
    expect(row).to_have_count(1)
    expect(row.locator("td.c-trail")).to_have_text(trail)
    expect(row.locator("td.c-info")).to_have_text(info)
    row.locator("td.c-sev").click()
    expect(page.locator("#drawer-title")).to_have_text(trail)
    expect(page.locator("#drawer-events tbody tr")).to_have_count(1)
    expect(page.locator("#live-feed")).to_contain_text(trail)
    assert page.locator("img[src='x'], script:not([src]), b, i, svg[onload]").count() == 0
    assert page.evaluate("window.__xss") is None
    assert console.unexpected() == []


def test_theme_switch_persists_and_follows_system(browser: Browser, context: BrowserContext,
                                                   dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "dark")  # the context prefers dark
    dark_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.click("#theme-btn")
    expect(html).to_have_attribute("data-theme", "light")
    light_bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark_bg != light_bg
    page.reload()
    expect(page.locator("#threats-body tr").first).to_be_visible()
    expect(html).to_have_attribute("data-theme", "light")
    page.keyboard.press("t")
    expect(html).to_have_attribute("data-theme", "dark")
    assert console.unexpected() == []
    fresh = browser.new_context(color_scheme="light")
    try:
        other = fresh.new_page()
        other.goto(dashboard.url + "/")
        expect(other.locator("html")).to_have_attribute("data-theme", "light")
    finally:
        fresh.close()


def test_triage_is_shared_and_survives_reload(browser: Browser, context: BrowserContext,
                                              dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    row = page.locator("#threats-body tr").nth(3)
    tid = row.get_attribute("data-id")
    row.locator("td.c-sev").click()
    page.click("#drawer button[data-status='investigating']")
    page.fill("#triage-note", "checking with the host owner")
    page.fill("#triage-tags", "apt-x, owner-asked")
    page.click("#triage-save")
    expect(page.locator(f"#threats-body tr[data-id='{tid}'] td.c-status")).to_contain_text("Investigating")
    expect(page.locator(f"#threats-body tr[data-id='{tid}'] td.c-status .tag")).to_have_text(["apt-x", "owner-asked"])
    # The drawer shows who changed what and when.
    page.locator(f"#threats-body tr[data-id='{tid}'] td.c-sev").click()
    entry = page.locator("#triage-history li").first
    expect(entry).to_contain_text(USER)
    expect(entry).to_contain_text("Investigating")
    expect(entry).to_contain_text("checking with the host owner")
    # Another analyst (a separate browser session) sees the status and the note.
    other = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page2, _ = login(other, dashboard)
        page2.fill("#search-input", "status:investigating tag:apt-x")
        page2.press("#search-input", "Enter")
        expect_total(page2, 1)
        mine = page2.locator(f"#threats-body tr[data-id='{tid}']")
        expect(mine.locator("td.c-status")).to_contain_text("Investigating")
        mine.locator("td.c-sev").click()
        expect(page2.locator("#triage-note")).to_have_value("checking with the host owner")
    finally:
        other.close()
    page.reload()
    expect(page.locator(f"#threats-body tr[data-id='{tid}'] td.c-status")).to_contain_text("Investigating")
    assert console.unexpected() == []


def test_suppression_hides_then_lifts(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    total = len(dashboard.pairs())
    expect_total(page, total)
    row = page.locator("#threats-body tr").first
    src = row.locator("td.c-ip").first.inner_text()
    row.locator("td.c-sev").click()
    page.select_option("#supp-scope", "source")
    page.fill("#supp-note", "lab scanner")
    page.click("#supp-create")
    same_source = sum(1 for s, _ in dashboard.pairs() if s == src)
    expect_total(page, total - same_source)
    page.fill("#search-input", "suppressed:yes")
    page.press("#search-input", "Enter")
    expect_total(page, total)
    page.click("#chips .chip-x")
    page.click("#user-btn")
    page.click("#supp-btn")
    rule = page.locator("#supp-table tbody tr", has_text=src)
    expect(rule).to_contain_text("lab scanner")
    expect(rule).to_contain_text(USER)
    rule.locator("button", has_text="Lift").click()
    expect(page.locator("#supp-list")).to_contain_text("No suppression rules")
    page.keyboard.press("Escape")
    expect_total(page, total)
    assert console.unexpected() == []


def test_export_links_follow_the_filtered_view(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    trail = DEMO_TRAIL_IPS[0]
    page.fill("#search-input", f"trail:{trail}")
    page.press("#search-input", "Enter")
    expected = sum(1 for _, t in dashboard.pairs() if t == trail)
    expect_total(page, expected)
    hrefs = {f: page.get_attribute(f"#export-{f}", "href") for f in ("csv", "json", "defanged")}
    for fmt, href in hrefs.items():
        assert f"format={fmt}" in href and f"q=trail%3A{trail}" in href
    csv_text = page.request.get(dashboard.url + hrefs["csv"]).text()
    lines = csv_text.strip().splitlines()
    assert "trail" in lines[0] and len(lines) == 1 + expected
    assert all(trail in line for line in lines[1:])
    data = json.loads(page.request.get(dashboard.url + hrefs["json"]).text())
    assert len(data["rows"]) == expected and {r["trail"] for r in data["rows"]} == {trail}
    defanged = page.request.get(dashboard.url + hrefs["defanged"]).text()
    assert defanged.split() == [trail.replace(".", "[.]")]
    # The browser downloads it as a file.
    with page.expect_download() as download:
        page.click("#export-csv")
    assert download.value.suggested_filename.endswith(".csv")
    assert console.unexpected() == []


def test_keyboard_date_picker_and_engine_panel(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    total = len(dashboard.pairs())
    page.keyboard.press("j")
    expect(page.locator("#threats-body tr.row-selected")).to_have_count(1)
    page.keyboard.press("Enter")
    expect(page.locator("#drawer")).to_be_visible()
    second = page.locator("#threats-body tr").nth(1).get_attribute("data-id")
    page.keyboard.press("j")  # the open drawer follows the selection
    expect(page.locator("#drawer-body")).to_contain_text(second)
    page.keyboard.press("Escape")
    expect(page.locator("#drawer")).to_be_hidden()
    page.keyboard.press("ArrowRight")
    expect(page.locator("#pager-top")).to_contain_text(f"51–{min(100, total):,} of {total:,}")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search-input"
    page.keyboard.press("Escape")

    page.click("#range-btn")
    today = dt.date.today().isoformat()
    cell = page.locator(f"#calendar button[data-date='{today}']")
    events_today = sum(dashboard.pairs().values())
    expect(cell).to_have_attribute("title", f"{today}: {events_today:,} events")
    assert re.search(r"\bd[1-5]\b", cell.get_attribute("class"))
    page.click("#range-presets button[data-preset='-1']")
    expect(page.locator("#threats-empty")).to_be_visible()
    expect_total(page, 0)
    page.keyboard.press("PageDown")
    expect_total(page, total)

    page.click("#engine-btn")
    expect(page.locator("#engine-panel")).to_be_visible()
    expect(page.locator("#engine-workers tbody tr")).to_have_count(2)  # the replay ran 2 workers
    expect(page.locator("#engine-body .pill")).to_have_text("stopped")
    assert console.unexpected() == []


def test_screenshot_of_the_main_view(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    expect(page.locator("#chart-trails .bar-row").first).to_be_visible()
    page.wait_for_timeout(300)  # let the row highlight fade
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    assert console.unexpected() == []


PLOTTED = """[...document.querySelectorAll('#chart-timeline rect.seg title')]
  .reduce((a, t) => a + Number(t.textContent.match(/: ([\\d,]+) \\(/)[1].replaceAll(',', '')), 0)"""


@pytest.mark.parametrize("zone", ["America/Los_Angeles", "Pacific/Kiritimati"])
def test_time_zones_follow_the_server_days(browser: Browser, dashboard: Dashboard, zone: str) -> None:
    """A browser far from the server's zone (the server runs in UTC) plots every event of the
    server's day on the axis, and shows first/last seen on the server's day, in each time mode."""
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000}, timezone_id=zone)
    ctx.set_default_timeout(20_000)
    try:
        page, console = login(ctx, dashboard)
        assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == zone
        events = sum(dashboard.pairs().values())
        expect(page.locator("#timeline-total")).to_have_text(f"{events:,} events")
        for label in ("Server time", "UTC", "Local"):
            expect(page.locator("#tz-btn")).to_have_text(label)
            expect(page.locator("#legend-timeline")).not_to_contain_text("outside the axis")
            assert page.evaluate(PLOTTED) == events, label
            if label != "Local":  # the server's day: times alone, never another date
                times = page.locator("#threats-body td.c-time").all_inner_texts()
                assert times and all(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in times), times
            page.click("#tz-btn")
        assert console.unexpected() == []
    finally:
        ctx.close()


def test_phone_viewport(browser: Browser, dashboard: Dashboard) -> None:
    """At 400 px: no sideways scrolling, a narrow table, and the detail panel's header and close
    button above the sticky top bar (the element at the button's centre is the button)."""
    ctx = browser.new_context(viewport={"width": 400, "height": 800}, is_mobile=True, has_touch=True,
                              device_scale_factor=2)
    ctx.set_default_timeout(20_000)
    try:
        page, console = login(ctx, dashboard)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        for hidden in ("c-status", "c-port", "c-type", "c-ref"):
            assert not page.locator(f"#threats-body td.{hidden}").first.is_visible(), hidden
        page.locator("#threats-body tr").first.locator("td.c-sev").tap()
        close = page.locator("#drawer-close")
        expect(close).to_be_visible()
        box = close.bounding_box()
        assert box is not None and box["y"] >= 0 and box["x"] + box["width"] <= 400
        on_top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).closest('#drawer-close') !== null",
                               [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
        assert on_top, "the close button is covered"
        title = page.locator("#drawer-title").bounding_box()
        assert title is not None and title["y"] >= 0
        close.tap()
        expect(page.locator("#drawer")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
        assert console.unexpected() == []
    finally:
        ctx.close()


def test_each_panel_paints_when_its_own_data_arrives(context: BrowserContext, dashboard: Dashboard) -> None:
    """The table does not wait for the charts: with /api/stats held back, the rows are drawn."""
    held = []
    page = context.new_page()
    console = Console(page)
    release = False

    def hold(route) -> None:
        if release:
            route.continue_()
        else:
            held.append(route)

    page.route("**/api/stats*", hold)
    page.goto(dashboard.url + "/")
    page.fill("#login-user", USER)
    page.fill("#login-pass", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#threats-body tr").first).to_be_visible()
    expect_total(page, len(dashboard.pairs()))
    assert held and page.inner_text("#timeline-total") == ""  # the charts are still waiting
    release = True
    for route in held:
        route.continue_()
    expect(page.locator("#timeline-total")).to_contain_text("events")
    assert console.unexpected() == []


def test_hunt_shows_the_events_paged_with_export(context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    per_source: dict[str, int] = {}
    for (src, _), n in dashboard.pairs().items():
        per_source[src] = per_source.get(src, 0) + n
    src = max(per_source, key=lambda s: per_source[s])
    page.fill("#search-input", f"src:{src}")
    page.press("#search-input", "Enter")
    expect(page.locator("#chips .chip")).to_have_count(1)
    page.locator("#threats-body tr").first.locator("td.c-sev").click()
    page.get_by_role("button", name="Hunt source").click()
    total = dashboard.api.get("/api/hunt/events", indicator=src, per_page=1)["total"]
    assert total >= per_source[src]
    pages = -(-total // 50)
    expect(page.locator("#hunt-page")).to_have_text(f"page 1 of {pages} · {total:,} events")
    expect(page.locator("#hunt-events-table tbody tr")).to_have_count(min(50, total))
    if pages > 1:
        page.click("#hunt-next")
        expect(page.locator("#hunt-page")).to_contain_text(f"page 2 of {pages}")
    href = page.get_attribute("#hunt-csv", "href")
    assert href and href.startswith("/api/hunt/export?")
    download = page.request.get(dashboard.url + href)
    assert download.ok and download.text().count("\n") == total + 1
    assert console.unexpected() == []


def test_pivot_links_only_when_configured(browser: Browser, context: BrowserContext, dashboard: Dashboard,
                                          tmp_path: Path) -> None:
    page, console = login(context, dashboard)  # the default configuration: no pivot link anywhere
    page.locator("#threats-body tr").first.locator("td.c-sev").click()
    expect(page.locator("#drawer-title")).not_to_be_empty()
    assert page.locator("#drawer a.pivot-link").count() == 0
    config = tmp_path / "pivots.toml"
    config.write_text(f"""[server]
index_dir = "{tmp_path / 'index'}"
flood_sources = 0
pivot_links = [{{name = "VirusTotal", url = "https://www.virustotal.com/gui/search/{{value}}"}},
               {{name = "Internal", url = "https://soc.internal/ip?q={{value}}", fields = ["src_ip"]}}]
""")
    port = free_port()
    proc = start_server(dashboard.log_dir, dashboard.log_dir.parent / "users.json", port, tmp_path / "s.log",
                        "-c", str(config))
    try:
        url = f"http://127.0.0.1:{port}"
        ApiClient(url, USER, PASSWORD).wait_for_total(len(dashboard.pairs()))
        other = Dashboard(url, dashboard.log_dir, dashboard.api)
        page2, console2 = login(context, other)
        row = page2.locator("#threats-body tr").first
        src = row.locator("td.c-ip").first.inner_text()
        row.locator("td.c-sev").click()
        links = page2.locator("#drawer a.pivot-link[data-field='src_ip']")
        expect(links).to_have_count(2)
        assert links.nth(0).get_attribute("href") == f"https://www.virustotal.com/gui/search/{quote(src, safe='')}"
        assert links.nth(1).get_attribute("href") == f"https://soc.internal/ip?q={quote(src, safe='')}"
        assert links.nth(0).get_attribute("rel") == "noopener noreferrer"
        expect(page2.locator("#drawer a.pivot-link[data-field='trail']")).to_have_count(1)  # VirusTotal only
        assert console2.unexpected() == []
    finally:
        stop_server(proc)
    assert console.unexpected() == []


def test_saved_views_on_the_server(browser: Browser, context: BrowserContext, dashboard: Dashboard) -> None:
    page, console = login(context, dashboard)
    src = sorted({s for s, _ in dashboard.pairs()})[0]
    page.fill("#search-input", f"src:{src}")
    page.press("#search-input", "Enter")
    expect(page.locator("#chips .chip")).to_have_count(1)
    page.once("dialog", lambda d: d.accept("one source"))
    page.click("#view-save")
    expect(page.locator("#views-select option", has_text="one source")).to_have_count(1)
    # Another browser of the same user finds the view and applies it.
    other = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page2, console2 = login(other, dashboard)
        expect(page2.locator("#views-select option", has_text="one source")).to_have_count(1)
        page2.select_option("#views-select", label="one source")
        expect(page2.locator("#chips .chip")).to_have_count(1)
        expect(page2.locator("#chips .chip")).to_contain_text(src)
        expect_total(page2, sum(1 for s, _ in dashboard.pairs() if s == src))
        page2.click("#view-delete")
        expect(page2.locator("#views-select option", has_text="one source")).to_have_count(0)
        assert console2.unexpected() == []
    finally:
        other.close()
    assert console.unexpected() == []


NOTIFICATION_RECORDER = """
window.__notes = [];
window.Notification = class {
  static permission = 'default';
  static async requestPermission() { window.Notification.permission = 'granted'; return 'granted'; }
  constructor(title, options) { window.__notes.push({title, body: options.body}); }
};
"""


def test_desktop_notifications_are_opt_in(context: BrowserContext, dashboard: Dashboard) -> None:
    """New high-severity threats raise a desktop notification only once the analyst opts in."""
    context.add_init_script(NOTIFICATION_RECORDER)
    page, console = login(context, dashboard)
    expect(page.locator("#live-state")).to_have_text("connected")
    now = time.time()

    def event(src: str, info: str) -> None:
        append_event(dashboard.log_dir, (int(now), 7, src, 41000, "198.51.100.66", 443, "TCP", "IP",
                                         "198.51.100.66", info, "(static)"), "notify-test")

    event("10.77.0.1", "botnet c2 (malware)")  # high, new: but notifications are off
    expect(page.locator("#live-feed")).to_contain_text("10.77.0.1")
    assert page.evaluate("window.__notes") == []
    page.click("#notify-btn")
    expect(page.locator("#notify-btn")).to_have_attribute("aria-pressed", "true")
    event("10.77.0.2", "mass scanner")  # low: no notification
    event("10.77.0.3", "ransomware (malware)")  # high and new: one notification
    expect(page.locator("#live-feed")).to_contain_text("10.77.0.3")
    notes = page.evaluate("window.__notes")
    assert len(notes) == 1 and "198.51.100.66" in notes[0]["title"] and "10.77.0.3" in notes[0]["body"]
    assert console.unexpected() == []


def test_sensors_view(context: BrowserContext, dashboard: Dashboard) -> None:
    """A second sensor's status file beside the first: both are listed with their figures."""
    now = time.time()
    edge = dashboard.log_dir / "sensor-status-edge.json"
    edge.write_text(json.dumps({
        "sensor": "edge", "started": now - 600, "updated": now, "final": False,
        "counters": {"packets": 60_000, "malformed": 0}, "per_worker_packets": [30_000, 30_000],
        "per_worker_busy_seconds": [1.0, 1.0], "rings": [{"dropped_packets": 7, "dropped_batches": 0}],
        "events_written": 1200, "index": {"generation": 3, "built_at": now - 7200, "trails": 1000}}))
    append_event(dashboard.log_dir, (int(now), 9, "10.88.0.1", 41000, "198.51.100.66", 443, "TCP", "IP",
                                     "198.51.100.66", "malware (demo)", "(static)"), "edge")
    try:
        page, console = login(context, dashboard)
        dashboard.api.wait_for_total(len(dashboard.pairs()))
        page.click("#engine-btn")
        row = page.locator("#sensors-table tr[data-sensor='edge']")
        expect(row).to_contain_text("running")
        expect(row).to_contain_text("2.0 h")  # the trail index's age
        expect(row).to_contain_text("7")  # ring drops
        expect(row.locator("td").nth(2)).to_contain_text("ago")  # its last event, from the index
        sensors = dashboard.api.get("/api/sensors")["sensors"]
        assert {s["sensor"] for s in sensors} >= {"edge"} and len(sensors) >= 2
        assert console.unexpected() == []
    finally:
        edge.unlink()


@contextlib.contextmanager
def own_server(context: BrowserContext, logs: Path, work: Path) -> Iterator[tuple[Page, Console]]:
    """A server of its own over `logs`, and a page logged in to it."""
    users = work / "users.json"
    add_user(users, USER, PASSWORD)
    port = free_port()
    proc = start_server(logs, users, port, work / "server.log")
    try:
        page = context.new_page()
        console = Console(page)
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#login-user", USER)
        page.fill("#login-pass", PASSWORD)
        page.click("#login-submit")
        yield page, console
    finally:
        stop_server(proc)


def test_indexing_progress_is_shown_until_complete(context: BrowserContext, tmp_path: Path) -> None:
    """A server still indexing a big log: the page says the counts are partial, with progress,
    then shows the whole totals once the index is complete."""
    logs = tmp_path / "logs"
    logs.mkdir()
    now = int(time.time()) - 60
    day = log_date(now)
    events = 360_000  # ~45 MB: three ingest rounds
    with open(logs / f"{day}.log", "w") as f:
        for start in range(0, events, 20_000):
            # a trail per source: 200 threats (one trail from 200 sources would be one flood threat)
            f.write("".join(format_event((now, i % 1_000_000, f"10.2.{i % 100}.{i % 40}", 40000,
                                          f"198.51.100.{i % 200}", 443, "TCP", "IP", f"198.51.100.{i % 200}",
                                          "malware (index)", "(static)"), "gw")
                            for i in range(start, start + 20_000)))
    with own_server(context, logs, tmp_path) as (page, console):
        note = page.locator("#index-note")
        expect(note).to_contain_text("Indexing the logs", timeout=60_000)
        expect(note).to_contain_text("partial")
        expect(note).to_be_hidden(timeout=120_000)
        expect_total(page, 200)
        expect(page.locator("#timeline-total")).to_have_text(f"{events:,} events")
        assert console.unexpected() == []


def test_admin_panel_creates_and_edits_users(browser: Browser, dashboard: Dashboard) -> None:
    """An admin lists, creates, edits, disables and removes users from the Users panel; the new
    user logs in with what was set; an analyst has no such panel."""
    analyst_ctx = browser.new_context()
    page, _ = login(analyst_ctx, dashboard)
    page.click("#user-btn")
    expect(page.locator("#supp-btn")).to_be_visible()
    expect(page.locator("#users-btn")).to_be_hidden()
    analyst_ctx.close()

    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    page, console = login(ctx, dashboard, ADMIN)
    page.on("dialog", lambda d: d.accept("wall-password-2" if d.type == "prompt" else None))
    page.click("#user-btn")
    page.click("#users-btn")
    table = page.locator("#users-table tbody")
    expect(table.locator("tr[data-name='analyst']")).to_contain_text("active")
    page.fill("#user-new-name", "wall")
    page.fill("#user-new-pass", "wall-password-1")
    page.select_option("#user-new-role", "viewer")
    page.fill("#user-new-scope", "10.66.0.0/16")
    page.click("#user-new-submit")
    row = table.locator("tr[data-name='wall']")
    expect(row.locator("select")).to_have_value("viewer")
    expect(row.locator("input")).to_have_value("10.66.0.0/16")
    assert ApiClient(dashboard.url, "wall", "wall-password-1").get("/api/session")["role"] == "viewer"

    page.fill("#user-new-name", "bad name")  # the server's refusal is shown, nothing is created
    page.fill("#user-new-pass", "wall-password-1")
    page.click("#user-new-submit")
    expect(page.locator("#user-new-error")).to_contain_text("user name")

    row.locator("select").select_option("analyst")
    row.locator("input").fill("10.66.0.0/16, 10.67.0.0/16")
    row.locator("button", has_text="Save").click()
    expect(page.locator("#toasts")).to_contain_text("User wall saved")
    session = ApiClient(dashboard.url, "wall", "wall-password-1").get("/api/session")
    assert (session["role"], session["scope"]) == ("analyst", ["10.66.0.0/16", "10.67.0.0/16"])
    row.locator("button", has_text="Password").click()
    expect(page.locator("#toasts")).to_contain_text("Password of wall reset")
    assert ApiClient(dashboard.url, "wall", "wall-password-2").get("/api/session")["user"] == "wall"
    row.locator("button", has_text="Disable").click()
    expect(row).to_contain_text("disabled")
    with pytest.raises(Exception, match="401"):
        ApiClient(dashboard.url, "wall", "wall-password-2")
    me = table.locator(f"tr[data-name='{ADMIN}']")  # the only admin: demoting it is refused
    me.locator("select").select_option("viewer")
    me.locator("button", has_text="Save").click()
    expect(page.locator("#toasts")).to_contain_text("last enabled admin")
    row.locator("button", has_text="Remove").click()
    expect(table.locator("tr[data-name='wall']")).to_have_count(0)
    assert "wall" not in [u["name"] for u in ApiClient(dashboard.url, ADMIN, PASSWORD).get("/api/users")["users"]]
    assert console.unexpected(400, 409) == []
    ctx.close()


def test_flood_threat_shows_its_sources(context: BrowserContext, tmp_path: Path) -> None:
    """A trail from more than 50 sources is one threat: its row shows the first source and "…60",
    whose title lists the sources; the drawer says how many and lists them."""
    logs = tmp_path / "logs"
    logs.mkdir()
    now = int(time.time()) - 60
    with open(logs / f"{log_date(now)}.log", "w") as f:
        f.write("".join(format_event((now, i, f"10.7.0.{i}", 40000 + i, "192.0.2.53", 53, "UDP", "DNS",
                                      "many.example-bad.org", "suspicious (many sources)", "(static)"), "gw")
                        for i in range(1, 61)))
    with own_server(context, logs, tmp_path) as (page, console):
        expect_total(page, 1)
        row = page.locator("#threats-body tr").first
        more = row.locator("td.c-ip .more-values").first
        expect(more).to_have_text(" …60")
        assert more.get_attribute("title").split("\n")[:2] == ["10.7.0.1", "10.7.0.2"]
        expect(row.locator("td.c-num")).to_have_text("60")
        row.locator("td.c-sev").click()
        expect(page.locator("#drawer-title")).to_have_text("many.example-bad.org")
        sources = page.locator("#drawer details.flood-sources")
        expect(sources.locator("summary")).to_have_text("flood: 60 distinct sources")
        sources.locator("summary").click()
        expect(sources.locator("li")).to_have_count(60)
        assert console.unexpected() == []
