"""Feed definitions (engine/data/feeds.toml) and the generic parsers, against one fixture per feed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.update.feeds import FeedError, FeedSpec, collect, load_feeds, parse_body

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"

# The 42 modules of Maltrail's trails/feeds/ (feeds.md section 2) and its default DISABLED_FEEDS.
FEED_NAMES = {
    "abuseipdb", "alienvault", "atmos", "badips", "binarydefense", "bitcoinnodes", "blackbook",
    "blackholemonster", "blocklist", "botscout", "bruteforceblocker", "ciarmy", "cleantalk",
    "cybercrimetracker", "dataplane", "dshieldip", "emergingthreatsbot", "emergingthreatscip",
    "emergingthreatsdns", "fareit", "feodotrackerip", "gpfcomics", "greensnow", "ipnoise", "maxmind",
    "minerchk", "myip", "openphish", "policeman", "rutgers", "sblam", "scriptzteam", "socksproxy",
    "sslblcert", "sslproxies", "statics", "torproject", "torprojectnodes", "trickbot", "turris",
    "urlhaus", "viriback",
}  # fmt: skip
DISABLED = {"turris", "ciarmy", "policeman", "myip", "alienvault"}
UNCHECKED = {"blocklist", "ciarmy", "emergingthreatscip"}  # "no chk" in feeds.md

Rows = dict[str, tuple[str, str]]


def same(info: str, reference: str, *trails: str) -> Rows:
    """Rows sharing one (info, reference)."""
    return {trail: (info, reference) for trail in trails}


# fixture file -> the exact rows the feed yields for it
EXPECTED: dict[str, Rows] = {
    "abuseipdb.ipv4": same(
        "known attacker", "abuseipdb.com", "45.133.1.20", "103.145.13.201", "91.92.240.15", "194.26.29.44"
    ),
    "alienvault.generic": same("bad reputation", "alienvault.com", "46.4.123.15", "185.156.73.54", "212.70.149.10"),
    "atmos.html": same(
        "atmos (malware)", "cybercrime-tracker.net", "atmos-panel.top", "update.secure-billing.info", "bank-check.xyz"
    ),
    "badips.txt": same("known attacker", "badips.com", "45.95.147.236", "141.98.11.11", "80.82.77.139"),
    "binarydefense.txt": same("known attacker", "binarydefense.com", "103.99.0.122", "5.188.206.14", "185.224.128.17"),
    "bitcoinnodes.ipset": same(
        "bad reputation (bitcoin node)", "bitnodes.io", "2.56.7.190", "5.9.18.251", "88.99.167.175"
    ),
    "blackbook.csv": {
        "0x0a.chickenkiller.com": ("Emotet (malware)", "github.com/stamparm/blackbook"),
        "update-flash-player.info": ("AgentTesla (malware)", "github.com/stamparm/blackbook"),
        "tracking.evil-cdn.net": ("Remcos (malware)", "github.com/stamparm/blackbook"),
        "www.payload-drop.org": ("Formbook (malware)", "github.com/stamparm/blackbook"),
    },
    "blackholemonster.txt": same("known attacker", "ip.blackhole.monster", "193.32.162.78", "162.142.125.11"),
    "blocklist.txt": same("known attacker", "blocklist.de", "1.14.97.176", "101.32.14.137", "115.231.78.10"),
    "botscout.ipset": same("spammer", "botscout.com", "5.188.62.140", "37.120.143.166", "103.251.167.10"),
    "bruteforceblocker.txt": same("known attacker", "rulez.sk", "61.177.172.140", "218.92.0.112", "180.101.88.228"),
    "ciarmy.txt": same("known attacker", "cinsscore.com", "1.12.37.88", "1.15.135.205", "103.74.54.98"),
    "cleantalk.ipset": same("spammer", "cleantalk.org", "23.95.243.44", "104.168.56.18", "192.3.45.170"),
    "cybercrimetracker.html": {
        "91.215.85.20/panel/cp.php?m=login": ("malware", "cybercrime-tracker.net"),
        "91.215.85.20": ("potential malware site", "cybercrime-tracker.net"),
        "update-check.top/admin/cp.php?m=login": ("malware", "cybercrime-tracker.net"),
        "update-check.top": ("malware", "cybercrime-tracker.net"),
        "secure-login.biz": ("malware", "cybercrime-tracker.net"),
        "185.106.92.7:8080/pony/gate.php": ("malware", "cybercrime-tracker.net"),
        "185.106.92.7": ("potential malware site", "cybercrime-tracker.net"),
    },
    "dataplane.sshpwauth.txt": same("known attacker", "dataplane.org", "218.92.0.107", "159.203.45.7", "51.75.146.33"),
    "dataplane.dnsrd.txt": same("known attacker", "dataplane.org", "162.142.125.211", "159.203.45.7"),
    "dshieldip.ipset": same("known attacker", "dshield.org", "80.94.95.81", "185.242.226.17", "218.92.0.56"),
    "emergingthreatsbot.rules": same(
        "potential malware site",
        "emergingthreats.net",
        "5.2.75.155",
        "23.94.5.133",
        "31.13.195.17",
        "102.129.143.12",
        "103.43.75.120",
    ),
    "emergingthreatscip.txt": same(
        "compromised (suspicious)", "emergingthreats.net", "1.13.5.202", "1.14.11.154", "101.35.240.48"
    ),
    "emergingthreatsdns.rules": same(
        "malware",
        "emergingthreats.net",
        "stealer-cdn.com",  # CnC Domain
        "update-srv.net",  # CnC DNS Query; lower-cased, leading dot trimmed
        "api.gate-check.org",  # C2 Domain, tls.sni; |2e| decoded
        "second-real.com",  # the last dns.query of the line
        "lower-case-marker.info",  # markers match case-insensitively
        "payload-host.icu",  # text after the last //
    ),
    "fareit.txt": same(
        "fareit (malware)",
        "cybercrime-tracker.net",
        "91.215.85.20/fre/gate.php",
        "update-srv.top/pm/gate.php",
        "www.cheapdeal.biz/wp/gate.php",
        "185.117.90.12/gate.php",
        "panelhost/gate.php",  # no dot filter
    ),
    "feodotrackerip.csv": {
        "162.243.103.246": ("emotet (malware)", "abuse.ch"),
        "137.184.114.20": ("pikabot (malware)", "abuse.ch"),
        "45.147.230.9": ("feodo (malware)", "abuse.ch"),
    },
    "gpfcomics.ipset": same("known attacker", "gpf-comics.com", "31.184.194.114", "46.161.40.19"),
    "greensnow.txt": same("known attacker", "greensnow.co", "1.4.250.94", "101.126.67.47", "139.59.93.159"),
    "ipnoise.txt": same("known attacker", "sekuripy.hr", "45.128.232.153", "92.118.39.87", "170.64.178.52"),
    "maxmind.ipset": same(
        "bad reputation (suspicious)", "maxmind.com", "5.45.207.22", "37.49.225.161", "185.81.157.120"
    ),
    "minerchk.txt": same(
        "crypto mining (suspicious)", "github.com/Hestat", "coinhive.com", "www.crypto-loot.org", "authedmine.com"
    ),
    "myip.txt": same("crawler", "myip.ms", "1.10.16.2", "5.255.231.44"),
    "openphish.txt": same(
        "phishing",
        "openphish.com",
        "secure-paypal-verify.com/login",
        "www.appleid-unlock.info/signin?x=1",
        "bit-wallet.top",
        "45.61.137.26/office365/index.html",
    ),
    "policeman.txt": same("malware", "malwaredomains.com", "evil-domain.com", "tracker.badsite.net"),
    "rutgers.txt": same("known attacker", "rutgers.edu", "1.161.33.201", "103.157.25.15", "159.89.202.150"),
    "sblam.txt": same("bad reputation (suspicious)", "sblam.com", "134.122.82.231", "173.254.222.30", "46.148.40.148"),
    "scriptzteam.txt": same(
        "bad reputation", "github.com/scriptzteam/badIPS", "1.12.37.88", "45.9.148.0/24", "212.83.152.51"
    ),
    "socksproxy.ipset": same("proxy (suspicious)", "socks-proxy.net", "8.210.83.33", "47.243.95.228", "72.195.34.59"),
    "sslblcert.csv": {
        "6b2d3e1c0f8a9b7c6d5e4f3a2b1c0d9e8f7a6b5c": ("asyncrat c2 cert (suspicious)", "abuse.ch"),
        "0123456789abcdef0123456789abcdef01234567": ("dridex c2 cert (suspicious)", "abuse.ch"),
        "fedcba9876543210fedcba9876543210fedcba98": ("unknown c2 cert (suspicious)", "abuse.ch"),
    },
    "sslproxies.ipset": same(
        "proxy (suspicious)", "sslproxies.org", "20.111.54.16", "103.152.112.162", "190.61.88.147"
    ),
    "statics.txt": {
        "morphed.ru": ("sinkhole (malware)", "(static)"),
        "108.61.1.1": ("parking site", "github.com/stamparm/aux"),
        "ua:Mozilla/4.0 (compatible; MSIE 6.0; Bot)": ("suspicious user agent", "github.com/stamparm/aux"),
    },
    "torproject.txt": same(
        "tor exit node (suspicious)", "torproject.org", "185.220.101.4", "185.220.102.8", "204.8.156.142"
    ),
    "torprojectnodes.json": same(
        "bad reputation (tor node)",
        "torproject.org",
        "185.220.101.4",
        "2001:67c:e60:c0c:192:42:116:16",
        "94.23.173.93",
    ),
    "trickbot.xml": same(
        "trickbot (malware)", "github.com/JR0driguezB", "103.221.254.102", "190.214.13.2", "36.89.106.69"
    ),
    "turris.csv": same("bad reputation", "turris.cz", "1.12.231.30", "2.57.122.208", "45.143.203.11"),
    "urlhaus.txt": same(
        "malware",
        "abuse.ch",
        "182.117.28.164:53211/i",
        "dl.fileshare-cdn.top/files/invoice.exe",
        "www.evil-downloads.net/payload/",
        "42.230.48.81:47838/bin.sh?x=1",
    ),
    "viriback.csv": {
        "panel.agent-stealer.top": ("agenttesla", "viriback.com"),
        "185.117.90.12/": ("lokibot", "viriback.com"),
        "gate.redline-c2.xyz/admin": ("redline", "viriback.com"),
        "amadey-update.xsph.ru/amadey": ("amadey", "viriback.com"),
        "pony-gate.net": ("pony", "viriback.com"),
    },
}


@pytest.fixture(scope="module")
def feeds() -> dict[str, FeedSpec]:
    return load_feeds()


def fixture(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def test_every_feed_is_defined(feeds: dict[str, FeedSpec]) -> None:
    assert set(feeds) == FEED_NAMES
    assert {name for name, spec in feeds.items() if not spec.enabled} == DISABLED
    assert {name for name, spec in feeds.items() if spec.check is None} == UNCHECKED


def test_every_feed_has_a_fixture(feeds: dict[str, FeedSpec]) -> None:
    assert {name.split(".")[0] for name in EXPECTED} == FEED_NAMES
    assert {path.name for path in FIXTURES.iterdir()} == set(EXPECTED) | {"trickbot.html"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_rows(feeds: dict[str, FeedSpec], name: str) -> None:
    assert parse_body(feeds[name.split(".")[0]], fixture(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_missing_raises(feeds: dict[str, FeedSpec], name: str) -> None:
    spec = feeds[name.split(".")[0]]
    if spec.check is None:
        return
    body = fixture(name).replace(spec.check, "")
    with pytest.raises(FeedError, match=f"feed {spec.name}: body lacks"):
        parse_body(spec, body)


def test_bad_json_raises_one_line(feeds: dict[str, FeedSpec]) -> None:
    with pytest.raises(FeedError, match="torprojectnodes: body is not valid JSON") as caught:
        parse_body(feeds["torprojectnodes"], '{"relays": [{"or_addresses": ["1.2.3.4:1"]},')
    assert "\n" not in str(caught.value)


def test_hostile_lines_are_skipped(feeds: dict[str, FeedSpec]) -> None:
    junk = "\x00\x1b[31m\n" + "|" * 5000 + "\n" + '"' * 3000 + "\n,,,,\n\ufffd\ufffd.\n"
    for name in ("abuseipdb", "dataplane", "feodotrackerip", "statics", "viriback", "sslblcert", "emergingthreatsdns"):
        spec = feeds[name]
        body = (spec.check or "") + "\n" + junk
        assert isinstance(parse_body(spec, body), dict)


def test_collect_dataplane_fetches_every_file(feeds: dict[str, FeedSpec]) -> None:
    spec = feeds["dataplane"]
    assert len(spec.urls) == 11
    bodies = dict.fromkeys(spec.urls, "# Dataplane.org - empty\n")
    bodies["https://dataplane.org/sshpwauth.txt"] = fixture("dataplane.sshpwauth.txt")
    bodies["https://dataplane.org/dnsrd.txt"] = fixture("dataplane.dnsrd.txt")
    bodies["https://dataplane.org/vncrfb.txt"] = "<html>maintenance</html>"  # lacks the check: skipped
    fetched: list[str] = []

    def get(url: str) -> str:
        fetched.append(url)
        return bodies[url]

    rows = collect(spec, get)
    assert fetched == list(spec.urls)
    assert rows == EXPECTED["dataplane.dnsrd.txt"] | EXPECTED["dataplane.sshpwauth.txt"]


def test_collect_raises_when_no_body_is_usable(feeds: dict[str, FeedSpec]) -> None:
    with pytest.raises(FeedError, match="dataplane: body lacks 'Dataplane.org'"):
        collect(feeds["dataplane"], lambda url: "")


def test_collect_propagates_fetch_errors(feeds: dict[str, FeedSpec]) -> None:
    def get(url: str) -> str:
        raise ConnectionError(url)

    with pytest.raises(ConnectionError):
        collect(feeds["blocklist"], get)


def test_collect_badips_fallback(feeds: dict[str, FeedSpec]) -> None:
    spec = feeds["badips"]
    assert spec.fallback == "https://iplists.firehol.org/files/bi_any_2_7d.ipset"
    bodies = {spec.urls[0]: "<html>Service discontinued</html>", spec.fallback: fixture("badips.txt")}
    assert collect(spec, bodies.__getitem__) == EXPECTED["badips.txt"]
    # the first body passes the check: the fallback is not fetched
    assert collect(spec, {spec.urls[0]: "45.95.147.236\n"}.__getitem__) == same(
        "known attacker", "badips.com", "45.95.147.236"
    )


def test_collect_trickbot_follows_the_last_config(feeds: dict[str, FeedSpec]) -> None:
    spec = feeds["trickbot"]
    raw = "https://raw.githubusercontent.com/JR0driguezB/malware_configs/master/TrickBot/mcconf_files/"
    bodies = {
        spec.urls[0]: fixture("trickbot.html"),
        raw + "config.conf_20200915.xml": fixture("trickbot.xml"),
    }
    assert collect(spec, bodies.__getitem__) == EXPECTED["trickbot.xml"]


def test_collect_trickbot_page_problems(feeds: dict[str, FeedSpec]) -> None:
    spec = feeds["trickbot"]
    with pytest.raises(FeedError, match="trickbot: page .* lacks 'mcconf'"):
        collect(spec, lambda url: "<html>rate limited</html>")
    with pytest.raises(FeedError, match="trickbot: page .* has no match for 'follow'"):
        collect(spec, lambda url: "<html>mcconf_files: empty</html>")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = '[one]\nurls = ["https://example.org/list.txt"]\ninfo = "known attacker"\nreference = "example.org"\n'


def test_load_feeds_accepts_a_minimal_feed(tmp_path: Path) -> None:
    spec = load_feeds(write(tmp_path, BASE))["one"]
    assert (spec.format, spec.enabled, spec.check, spec.urls) == (
        "plain",
        True,
        None,
        ("https://example.org/list.txt",),
    )
    assert parse_body(spec, "# c\n1.2.3.4\n::1\n") == same("known attacker", "example.org", "1.2.3.4")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"\n', "feed one: unknown key 'colour'"),
        ('format = "xml"\n', "feed one: unknown format 'xml'"),
        ('pattern = "x"\n', "feed one: unknown key 'pattern' for format plain"),
        ("enabled = 1\n", "feed one: key 'enabled' must be bool"),
        ('format = "regex"\npattern = "(x"\n', "feed one: key 'pattern' is not a valid regex"),
        ('format = "regex"\npattern = "(x)"\ntrail = "{2}"\n', r"feed one: key 'trail': no field \{2\}"),
        ('format = "json"\n', "feed one: key 'path'"),
        ('transform = ["upper"]\n', "feed one: key 'transform': unknown step 'upper'"),
        ('fallback = "https://example.net/"\n', "feed one: key 'fallback' needs 'check'"),
        ('follow = "x"\n', "feed one: keys 'follow' and 'follow_url' go together"),
    ],
)
def test_load_feeds_refuses_bad_definitions(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        load_feeds(write(tmp_path, BASE + extra))


def test_load_feeds_refuses_missing_required_key(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="feed one: key 'reference' is required"):
        load_feeds(write(tmp_path, BASE.replace('reference = "example.org"\n', "")))


def test_load_feeds_unreadable(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="unreadable"):
        load_feeds(write(tmp_path, "[one\n"))
