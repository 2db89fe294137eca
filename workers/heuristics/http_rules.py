"""HTTP heuristics as pure functions (spec 2.6, 3): the suspicious-request battery, direct
downloads, scanner canary paths, IoT-malware downloads, proxy probes, suspicious User-Agents,
content types, sinkhole pages and seized-domain titles.

The regular expressions are this project's own, written from the categories Maltrail reports
(spec 3); they are compiled once at import. The only state is bounded LRU caches.

Query strings encode spaces as `+`, and `unquote` leaves `+` alone, so "whitespace" inside the
attack patterns is `[\\s+]`. Repetitions are bounded (or possessive) so that a search over a
long hostile path stays fast.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote, urlparse

from engine.resources import data_file
from workers.heuristics.prefilter import LazyPattern, PatternSet, cached_lines
from workers.protocols.http import HEAD_CHARS, HttpResponse

# Decoded, lowercased request texts containing any of these are never examined (`ads` also
# matches `/uploads/`, `/downloads/`: that is Maltrail's behaviour and keeps asset URLs quiet).
_WHITELISTED_PARTS = ("fql", "yql", "ads", "../images/", "../themes/", "../design/", "../scripts/", "../assets/",
                      "../core/", "../js/", "/gwx/")
# Without one of these a decoded request text cannot carry any of the attack constructs.
_PRECONDITION = ("?", "..", ".ht", "=", " ", "'")

_WS = r"[\s+]+"  # a run of blanks: spaces, tabs or query-string `+`
_GAP = r"(?:[\s+]|/\*.{0,100}?\*/)+"  # blanks or SQL comments between keywords
_CMD = r"(?:^|[;|&`=\n]|\$\()[\s+]*"   # the place a shell command starts in an injected value

_SQL = "|".join((
    r"information_schema",
    r"\bsys(?:databases|users|objects|columns)\b",
    r"\bfloor[\s+]*\([\s+]*rand[\s+]*\(",
    rf"\border{_GAP}by{_GAP}\d+(?:{_GAP}(?:asc|desc))?[\s+]*(?:$|--|#|[;,'\")&])",
    rf"\bunion(?:{_GAP}all|{_GAP}distinct)?{_GAP}select\b",
    r"\b(?:updatexml|extractvalue)[\s+]*\(",
    rf"\bcase{_GAP}(?:[^\s+]{{1,40}}{_GAP})?when\b.{{1,120}}?\bthen\b.{{1,120}}?\b(?:else|end)\b",
    rf"\bwaitfor{_GAP}delay\b",
    r"\bconvert[\s+]*\([^()&]{0,80}?(?:,|\busing\b)",
    r"\bn?varchar[\s+]*\(",
    r"\bcount[\s+]*\([\s+]*\*[\s+]*\)",
    r"\b(?:pg_)?sleep[\s+]*\([\s+]*\d",
    # SELECT cols FROM table [alias] WHERE <comparison> | GROUP BY | ORDER BY: English sentences
    # with these words lack the single table name or the comparison
    rf"\bselect{_GAP}[^&=]{{1,200}}?{_GAP}from{_GAP}[\w.`\"\[\]$#@]{{1,100}}(?:{_GAP}(?:as{_GAP})?\w{{1,30}})?{_GAP}"
    rf"(?:where{_GAP}[^&]{{0,80}}?(?:[=<>]|\blike\b|\bin[\s+]*\()|group{_GAP}by\b|order{_GAP}by\b)",
    r"/\*.{0,100}?\*/[\s+(]*(?:and|or|select|union)\b",
    r"\b(?:and|or|select|union)[\s+]*/\*",
    r"/\*!\d*[\s+]*(?:and|or|select|union)\b",  # MySQL versioned comment
    rf"\b(?:and|or){_GAP}\(?['\"]?\d+['\"]?[\s+]*(?:[=<>]|like\b)[\s+]*['\"]?\d+",
    r"odbc;driver",
    rf"\binto{_GAP}(?:out|dump)file\b",
    rf"\bdrop{_GAP}(?:table|database)\b",
))
_XSS = "|".join((
    r"<script\b",
    r"\balert[\s+]*\(",
    r"\b(?:alert|confirm|prompt)[\s+]*[(`][\s+]*(?:\d|document\.|['\"`]?xss)",
    r"\bon(?:mouseover|error|focus|transitionend)[\s+]*=[^&]{0,200}?\(",
    r"<(?:img|svg|iframe|body|video|audio|details|object)\b[^>]{0,200}?\bon[a-z]+[\s+]*=",
))
_SSTI = "|".join((
    r"\$\{\{.{1,200}?\}\}",
    # `${...}` expressions, except the shell `${IFS}` and log4j lookups that the RCE row reports
    r"\$\{(?![^}]{0,200}(?:jndi|\$\{|::-|\bifs\b|\b(?:lower|upper|env|sys|date|java|main):))[^}]{1,200}\}",
))
# possessive pieces and a gap that cannot cross an `@`: linear even on long texts of near-addresses
_EMAIL = r"(?<![\w.+-])[\w.+-]{1,64}+@[\w-]++(?:\.[\w-]++)++"
_LEAK = "|".join((
    r"\bim[es]i=\d{15}\b",
    r"\biccid=\d{18,22}f?\b",
    r"\b(?:mac|sid)=(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b",
    r"\bsim=\d{20}\b",
    rf"{_EMAIL}(?:[^@]*?{_EMAIL}){{3}}",
    r"\btel(?:num|company)=",
))
_RCE = "|".join((
    r"\$_(?:get|post|request|cookie|server|files|env|session)\b",
    r"\b(?:xp_cmdshell|shell_exec|passthru|proc_open|popen)\b",
    r"\beval[\s+]*\([\s+]*(?:base64_decode|gzinflate|str_rot13|\$_)",
    rf"\bping{_WS}-[nc]{_WS}\d",
    rf"\bwget{_WS}(?:-[^\s+]+{_WS})*(?:https?|ftp):",
    rf"\bcurl{_WS}(?:-[^\s+]+{_WS})*-[a-z]*o\b",
    r"\|[\s+]*(?:ba|da|z)?sh\b",
    r"/bin/(?:ba|da|z)?sh(?![\w.-])",
    rf"\bcat{_WS}/[\w.]",
    rf"\bchmod{_WS}(?:-\w+{_WS})?(?:[0-7]{{3,4}}|[ugoa]*\+[rwx]+)\b",
    rf"\bbase64{_WS}(?:-d|--decode)\b",
    rf"\bn(?:c|cat|etcat){_WS}(?:-[a-z]{{1,4}}{_WS}(?:\d+{_WS})?)*-[a-z]{{0,3}}[lep]\b",
    r">[\s+]*/dev/null",
    r"2>&1",
    r"\bcmd\.exe\b",
    rf"\bpowershell(?:\.exe)?{_WS}-",
    r"\bjndi:(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)\b",
    r"\$\{[^}]{0,40}\$\{[^}]{0,40}(?:lower|upper|::-)",
    r"\$(?:\{ifs\}|ifs\b)",
    r"getruntime\(\)\.exec\(",
    _CMD + r"(?:ipconfig|nltest|netsh|whoami|systeminfo)\b",
))
_TRAVERSAL = "|".join((
    r"(?:\.\.[/\\]){3}",
    r"/etc/(?:passwd|shadow|hosts|group|issue|crontab)(?![\w-])",
    r"/proc/self/(?:environ|cmdline)\b",
    r"\b(?:win|boot|system)\.ini\b",
    r"\bsystem32\b",
    r"%systemroot%",
))
_WEB_SCAN = r"inexistent|acunetix|w00tw00t|muieblackcat|\bbxss\.me\b|\bvulnweb\.com\b|owasp[_-]?zap|zaproxy" \
            r"|nessus(?:test|_is_probing)"
_DNS_CHANGER = r"\b(?:dhcppridns|dhcpsecdns|wan_dns[12]?|dns[1-4]|dnsserver[12]?|dns(?:primary|secondary)" \
               r"|(?:primary|secondary)dns)[\s+]*=[\s+]*\d{1,3}(?:\.\d{1,3}){3}\b"

_FLAGS = re.I | re.S


SUSPICIOUS_CATEGORIES: tuple[tuple[str, LazyPattern], ...] = tuple((name, LazyPattern(rx, _FLAGS)) for name, rx in (
    ("potential sql injection", _SQL),
    ("potential xml injection", r"/text\(\)[\s+]*=[\s+]*['\"]"),
    ("potential php injection", r"<\?php\b|\bphp://(?:input|filter)\b"),
    ("potential ldap injection", r"\(\|[\s+]*\([\w-]+=\*|\*\)\(\|?\(?[\w-]+=\*"),
    ("potential xss injection", _XSS),
    ("potential xxe injection", r"\[[\s+]*<!entity\b"),
    ("potential ssti injection", _SSTI),
    ("potential data leakage", _LEAK),
    ("config file access", r"\.ht(?:access|passwd)\b|\bwp-config\.php\b"),
    ("potential remote code execution", _RCE),
    ("potential directory traversal", _TRAVERSAL),
    ("potential web scan", _WEB_SCAN),
    ("potential dns changer", _DNS_CHANGER),
))
_DATA_LEAKAGE = "potential data leakage"
# The attack categories, then the whitelisted parts: one scan tells whether a text needs any work.
_CATEGORIES = PatternSet("attack-categories", [rx.pattern for _, rx in SUSPICIOUS_CATEGORIES]
                         + [re.escape(part) for part in _WHITELISTED_PARTS], _FLAGS)

# Sinkhole operators mark their servers in a header or say so on the page; the match is the trail.
SINKHOLE_RESPONSE_RE = re.compile(
    r"^x-sinkhole:[^\r\n]*"
    r"|^server:[^\r\n]*\bsinkhole[^\r\n]*"
    r"|\b(?:this|the)\s+domain\s+(?:name\s+)?(?:has\s+been|is)\s+sinkholed\b[^\r\n<]{0,60}"
    r"|\bsinkholed\s+by\s+[^\r\n<]{1,60}"
    r"|\bsinkhole\s+(?:server|project|page)\b",
    re.I | re.M)
# What makes urlparse differ from splitting at ?, # and the last / (params, removed characters,
# a netloc that ends early): requests with these take the slow, exact way.
_URLPARSE_PATH = re.compile(r"[;\t\r\n]")
_URLPARSE_HOST = re.compile(r"[/?#\[\]\\@;\t\r\n]")
SEIZED_TITLE_RE = re.compile(r"domain name has been seized by|Domain Seized|Domain Seizure", re.I)
# Scripts and raw executables that a web server has no business labelling as such for a normal
# download (installers come as octet-stream or x-msdownload, which are left out on purpose).
SUSPICIOUS_CONTENT_TYPES = frozenset((
    "application/x-sh", "application/x-shellscript", "text/x-sh", "text/x-shellscript", "application/hta",
    "application/x-bat", "application/bat", "text/vbscript", "application/x-ms-shortcut", "application/x-elf",
    "application/x-executable", "application/x-dosexec",
))

_DOWNLOAD_EXTENSIONS = frozenset((".apk", ".bin", ".class", ".chm", ".dll", ".egg", ".exe", ".hta", ".hwp", ".lnk",
                                  ".msi", ".pif", ".ps1", ".pyz", ".scr", ".sct", ".vsto", ".wbk", ".xpi"))
_DOWNLOAD_EXCLUDED = ("cgi", "/scripts/", "/_vti_bin/", "/bin/", "/pub/softpaq/", "/bios/", "/pc-axis/")
_SUSPICIOUS_FILENAMES = (
    ("non-existent page (suspicious)", re.compile(r"defaultwebpage\.cgi", re.I | re.A)),
    ("potential web scan (suspicious)", re.compile(
        r"inexistent_file_name\.inexistent|test-for-some-inexistent-file|long_inexistent_path"
        r"|some-inexistent-website\.acu", re.I | re.A)),
)
_IPV4ISH = re.compile(r"[0-9]+\.[0-9.]+")
# A dropper path: plain path characters only, the last segment named after (or with the
# extension of) a CPU architecture, or a dropper script/bot name.
_PLAIN_PATH = re.compile(r"/[\w./~-]*")
_IOT_NAME = re.compile(
    r"(?:^|[._-])(?:x86(?:_64)?|x64|i[3-6]86|arm(?:v?[4-7]l?|64)?|aarch64|mips(?:el|64)?|mpsl|m68k?|ppc(?:440)?"
    r"|powerpc|sh4?|sparc|spc|arc|root|exploit|yarn|zte|mozi\.[am])\Z",
    re.I)
_PROXY_PROBE_WORDS = ("probe", "proxy", "echo", "check")
_UA_WHITELIST = re.compile(r"AntiVir-NGUpd|TMSPS|AVGSETUP|SDDS|Sophos|Symantec|internal dummy connection"
                           r"|Microsoft-CryptoAPI", re.I)


_REGEX_SYNTAX = frozenset("\\.^$*+?{}[]|()")


def _ua_patterns(text: str) -> list[str]:
    """The `ua.txt` lines as alternation members: regexes as written, literals (` (compatible`
    strings, lines that are not valid regexes, or not valid inside a group) escaped. A line with
    no regex syntax is valid as written without compiling it (two thirds of the list); the rest
    are compiled to see, which cost every sensor start about 20 ms: the result is cached
    (`cached_lines`)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if " (compatible" not in line and _REGEX_SYNTAX.isdisjoint(line):
            patterns.append(line)
            continue
        if " (compatible" not in line:
            try:
                re.compile(f"(?:{line})")
            except re.error:
                pass
            else:
                patterns.append(line)
                continue
        patterns.append(re.escape(line))
    return patterns


class _UaMatcher:
    """The bundled list with the semantics of one alternation (the leftmost match wins, then list
    order), after the whitelist: the winner is the candidate whose own leftmost match starts
    first, ties going to list order. Candidates come from one Hyperscan prefilter over the
    whitelist and the list (a 1,300-way alternation in `re` cost about 1.5 ms per new User-Agent,
    the whitelist alone 10 µs); each is compiled when first needed, as most never are."""

    def __init__(self, whitelist: re.Pattern[str], patterns: list[str]) -> None:
        self._whitelist = whitelist
        self._sources = patterns
        self.prefilter = PatternSet("user-agents", [whitelist.pattern, *patterns], re.I)
        self.lines = PatternSet("user-agents-lines", [whitelist.pattern, *patterns], re.I, lines=True)  # batches
        self._compiled: dict[int, re.Pattern[str]] = {}

    def search(self, ua: str) -> tuple[int, int] | None:
        """(start, end) of the match a single alternation of the list would find; None when there is
        none or the User-Agent is whitelisted."""
        best: tuple[int, int, int] | None = None  # (start, list order, end)
        for candidate in self.prefilter.candidates(ua):
            if candidate == 0:
                if self._whitelist.search(ua):
                    return None
                continue
            order = candidate - 1
            rx = self._compiled.get(order)
            if rx is None:
                rx = self._compiled[order] = re.compile(f"(?:{self._sources[order]})", re.I)
            m = rx.search(ua)
            if m and (best is None or m.start() < best[0]):
                best = (m.start(), order, m.end())
        return None if best is None else (best[0], best[2])


_UA = _UaMatcher(_UA_WHITELIST, cached_lines("user-agents", data_file("ua.txt").read_text(encoding="utf-8"),
                                             _ua_patterns))
# For many request paths in one scan (`paths_unremarkable`): the attack categories, then the
# pieces `direct_download` and `suspicious_path` need in a lowercase path (an extension, a canary
# word), then the characters urlparse drops from a path (joining its pieces).
_PATH_LINES = PatternSet("request-paths", [rx.pattern for _, rx in SUSPICIOUS_CATEGORIES] + [
    re.escape(piece) for piece in (*sorted(_DOWNLOAD_EXTENSIONS), "inexistent", "defaultwebpage.cgi")] + [r"[\t\r]"],
    _FLAGS, lines=True)


def prepare() -> None:
    """Load (or compile) the pattern prefilters now: the fork server does, and workers inherit them."""
    _CATEGORIES.prepare()
    _PATH_LINES.prepare()
    _UA.prefilter.prepare()
    _UA.lines.prepare()


def paths_unremarkable(paths: list[str], joined: str | None = None) -> list[bool]:
    """For many lowercase ASCII request paths of plain Hosts at once: True where none of the attack
    categories (`suspicious_request`, on the decoded path), `direct_download` and `suspicious_path`
    can report, from one Hyperscan scan of the paths and of the decoded ones that differ (one
    scan each, and Python's `re` for the file names, cost more than the rest of a new request's
    checks). The file name those two judge is a piece of such a path, or joined from its pieces
    when it holds a tab, CR or LF (urlparse drops them), and then the path is not settled.
    `joined`: the paths joined by line feeds, when the caller has them so and none holds one."""
    decoded = [(i, text) for i, path in enumerate(paths) if "%" in path and (text := unquote(path)) != path
               ] if "%" in (joined or "".join(paths)) else []
    texts = paths + [text for _, text in decoded] if decoded else paths
    if joined is None or decoded:
        joined = None
        if not _one_line_each(texts):
            return _without_line_feeds(paths_unremarkable, paths, {i for i, text in decoded if "\n" in text})
    files = len(SUSPICIOUS_CATEGORIES)  # pattern ids from here on are the file-name pieces
    found = _PATH_LINES.candidates_many(texts, joined)
    quiet = [not hits for hits in found[: len(paths)]]
    for (i, _), hits in zip(decoded, found[len(paths) :], strict=True):  # the path for files, the text for attacks
        quiet[i] = (not found[i] or found[i][-1] < files) and (not hits or hits[0] >= files)
    return quiet


def user_agents_unsuspicious(uas: list[str], joined: str | None = None) -> list[bool]:
    """For many one-line User-Agents at once: True where `suspicious_user_agent` is certainly None
    (no list pattern can match; the whitelist alone, pattern 0, only ever gives None). `joined`:
    the agents joined by line feeds, when the caller has them so and none holds one."""
    if joined is None and not _one_line_each(uas):
        return _without_line_feeds(user_agents_unsuspicious, uas, set())
    return [not found or found == [0] for found in _UA.lines.candidates_many(uas, joined)]


def _one_line_each(texts: list[str]) -> bool:
    """No text holds a line feed: a search for one in the texts joined (memchr) costs a tenth of
    counting them in the texts joined by line feeds."""
    return "\n" not in "".join(texts)


def _without_line_feeds(check: Callable[[list[str]], list[bool]], texts: list[str], odd: set[int]) -> list[bool]:
    """`check` of the texts without a line feed (nor an index in `odd`); False for the others."""
    picks = [i for i, text in enumerate(texts) if "\n" not in text and i not in odd]
    out = [False] * len(texts)
    for i, fine in zip(picks, check([texts[i] for i in picks]), strict=True):
        out[i] = fine
    return out


def sinkhole_match(head: str) -> str | None:
    """The sinkhole text of a response head (the regex on its own: over 100 µs on 2 KB)."""
    m = SINKHOLE_RESPONSE_RE.search(head)
    return m.group(0) if m else None


def sinkhole_response(resp: HttpResponse) -> str | None:
    """`sinkhole_match` of a response. Every alternative of the regex contains the word
    `sinkhole`, so a search of the raw bytes (banners are ASCII) spares decoding and the regex."""
    if b"sinkhole" not in resp.raw[:4 * HEAD_CHARS].lower():
        return None
    return sinkhole_match(resp.head)


def encode_for_trail(text: str) -> str:
    """Percent-encode the characters that would break a bracketed trail or a log line."""
    return (text.replace("(", "%28").replace(" ", "%20").replace(")", "%29").replace("\r", "%0D")
            .replace("\n", "%0A"))


@lru_cache(maxsize=4096)
def _categorise(text: str, skip_leakage: bool) -> str | None:
    """Nothing for a text with a whitelisted part or none of the precondition characters; else the
    first category that matches. The prefilter settles the usual text, which has no candidate."""
    candidates = _CATEGORIES.candidates(text)
    if not candidates:
        return None
    if candidates[-1] >= len(SUSPICIOUS_CATEGORIES):  # a whitelisted part may be there
        low = text.lower()
        if any(part in low for part in _WHITELISTED_PARTS):
            return None
    if not any(c in text for c in _PRECONDITION):
        return None
    for i in candidates:
        if i >= len(SUSPICIOUS_CATEGORIES):
            break
        name, rx = SUSPICIOUS_CATEGORIES[i]
        if not (skip_leakage and name == _DATA_LEAKAGE) and rx.search(text):
            return name
    return None


def suspicious_request(path: str, body: str | None, private_dst: bool) -> str | None:
    """The first attack category (spec 3 order) found in the URL-decoded request: the path, or
    the POST body when `body` is given. Data leakage towards a private address is normal
    traffic (intranet forms), so it is skipped for the path variant."""
    if body is not None:
        return _categorise(unquote(body), False)
    return _categorise(unquote(path), private_dst)


def _filename(host: str, path: str) -> str:
    """Last segment of the URL path as `urlparse` splits it (query, fragment, `;params` removed).
    Plain requests take a shortcut with the same result (urlparse costs over a microsecond)."""
    if path[:1] == "/" and _URLPARSE_PATH.search(path) is None and _URLPARSE_HOST.search(host) is None:
        return path.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    try:
        return urlparse("http://" + host + path).path.rsplit("/", 1)[-1]
    except ValueError:  # e.g. an unbalanced `[` in a hostile Host header
        return path.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]


def direct_download(host: str, path: str, private_dst: bool) -> str | None:
    """`direct .exe download (suspicious)` and the like: a short executable file name fetched
    directly from an outside server (droppers use short random names, software sites long ones)."""
    if private_dst or "." not in path:
        return None
    filename = _filename(host, path)
    if "." not in filename:
        return None
    stem, ext = posixpath.splitext(filename)
    ext = ext.lower()
    if ext not in _DOWNLOAD_EXTENSIONS or len(stem) >= 10:  # rules out almost every request first
        return None
    if any(part in path for part in _DOWNLOAD_EXCLUDED) or "=" in path.partition("?")[2]:
        return None
    return f"direct {ext} download (suspicious)"


def suspicious_path(path: str) -> str | None:
    """Info text when the requested file name is a web scanner's canary or a known non-existent page.
    Every alternative holds one of two words (the patterns fold ASCII only), and the file name is
    a piece of the path: a path without them is settled before the file name is cut out."""
    low = path.lower()
    if "defaultwebpage.cgi" not in low and "inexistent" not in low:
        return None
    filename = _filename("", path)
    low = filename.lower()
    if "defaultwebpage.cgi" not in low and "inexistent" not in low:
        return None
    for info, rx in _SUSPICIOUS_FILENAMES:
        if rx.search(filename):
            return info
    return None


def iot_download(host: str, path: str) -> bool:
    """A file named after a CPU architecture fetched from a bare IPv4 host: how IoT botnets
    (Mirai and kin) fetch their per-architecture binaries."""
    return (_IPV4ISH.fullmatch(host) is not None and _PLAIN_PATH.fullmatch(path) is not None
            and _IOT_NAME.search(path.rsplit("/", 1)[-1]) is not None)


def proxy_probe(path: str) -> bool:
    """An absolute-URI request testing whether this host is an open proxy."""
    return path.startswith("http://") and any(word in path for word in _PROXY_PROBE_WORDS)


def _ua_piece(text: str) -> str:
    return text.rstrip("\\").replace("(", "\\(").replace(")", "\\)")


@lru_cache(maxsize=10_000)
def suspicious_user_agent(ua: str) -> str | None:
    """The UA trail when the User-Agent matches the bundled list: `M (UA)` when the match M sits
    inside the UA, else M with the text around it bracketed (`masscan(/1.0)`)."""
    found = _UA.search(ua)
    if found is None or found[0] == found[1]:
        return None
    hit = ua[found[0] : found[1]]
    before, after = ua.split(hit, 1)
    if before and after:
        return f"{_ua_piece(hit)} ({_ua_piece(ua)})"
    trail = (f"({_ua_piece(before)})" if before else "") + _ua_piece(hit) + (f"({_ua_piece(after)})" if after else "")
    # Trailing backslashes are dropped so that none escapes a closing bracket; a match made only of
    # backslashes keeps them rather than leave an empty trail.
    return trail or hit
