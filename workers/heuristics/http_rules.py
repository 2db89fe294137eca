"""HTTP heuristics as pure functions (spec 2.6, 3): the suspicious-request battery, direct
downloads, scanner canary paths, IoT-malware downloads, proxy probes, suspicious User-Agents,
content types, sinkhole pages and seized-domain titles.

The regular expressions are this project's own, written from the categories Maltrail reports;
they are compiled once at import. Caches are bounded.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote, urlparse

from engine.resources import data_file

_WHITELISTED_PARTS = ("fql", "yql", "ads", "../images/", "../themes/", "../design/", "../scripts/", "../assets/",
                      "../core/", "../js/", "/gwx/")
_PRECONDITION = ("?", "..", ".ht", "=", " ", "'")

_FLAGS = re.I | re.S
SUSPICIOUS_CATEGORIES: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(rx, _FLAGS)) for name, rx in (
    ("potential sql injection",
     r"information_schema|sys(?:databases|users)\b|floor\s*\(\s*rand\s*\(|\border\s+by\s+\d+"
     r"|\bunion\b(?:\s+all)?\s+select\b|\b(?:updatexml|extractvalue)\s*\(|\bcase\b.+?\bwhen\b.+?\bthen\b"
     r"|\bwaitfor\s+delay\b|\bconvert\s*\(|\bvarchar\s*\(|\bcount\s*\(\s*\*\s*\)|\b(?:pg_)?sleep\s*\(\s*\d"
     r"|\bselect\b.+?\bfrom\b.+?\b(?:where|group\s+by|order\s+by)\b|/\*.*?\*/\s*(?:and|or|select)\b"
     r"|\b(?:and|or)\s+['\"]?(\d+)['\"]?\s*=\s*['\"]?\1\b|odbc;driver|\binto\s+(?:out|dump)file\b"
     r"|\bdrop\s+(?:table|database)\b"),
    ("potential xml injection", r"/text\(\)\s*=\s*'"),
    ("potential php injection", r"<\?php|php://input"),
    ("potential ldap injection", r"\(\|\(\w+=\*"),
    ("potential xss injection",
     r"<script[^>]*>|\balert\s*\(|\b(?:alert|confirm|prompt)\s*\(\s*(?:\d|document\.|['\"]?xss)"
     r"|\bon(?:mouseover|error|focus|transitionend)\s*=.*?\("),
    ("potential xxe injection", r"\[<!entity"),
    ("potential ssti injection", r"\$\{\{.+?\}\}|\$\{[^}]*\}"),
    ("potential data leakage",
     r"\bim[es]i=\d{15}\b|\biccid=\d{18,22}\b|\b(?:mac|sid)=(?:[0-9a-f]{2}[:-]){5}[0-9a-f]{2}\b|\bsim=\d{20}\b"
     r"|(?:[\w.+-]+@[\w-]+\.[\w.]+.*?){4}|\btel(?:num|company)="),
    ("config file access", r"\.ht(?:access|passwd)\b|wp-config\.php"),
    ("potential remote code execution",
     r"\$_(?:get|post|request|cookie|server|files|env)\b|xp_cmdshell|shell_exec|\bping\s+-[nc]\s+\d"
     r"|\bwget\s+https?:|\bcurl\s+-o\b|/bin/(?:ba)?sh\b|\bcat\s+/|\bchmod\s+[0-7+]|\bbase64\s+-d\b"
     r"|\bnc\s+-l\s*-p\b|>\s*/dev/null|2>&1|cmd\.exe|\bjndi:(?:ldaps?|rmi|dns|iiop|corba|nds|http)\b"
     r"|\$\{ifs\}|getruntime\(\)\.exec\(|\bipconfig\b|\bnltest\b|\bnetsh\s"),
    ("potential directory traversal",
     r"(?:\.\./){3}|/etc/(?:passwd|shadow|hosts|group|issue)\b|\b(?:win|boot)\.ini\b|system32|%systemroot%"),
    ("potential web scan",
     r"inexistent|acunetix|w00tw00t|muieblackcat|\.bxss\.me|zaproxy|vega-?scan|nessus|nikto|sqlmap"),
    ("potential dns changer",
     r"\b(?:dhcppridns|dhcpsecdns|wan_dns[12]?|dns[1-4]|dnsserver[12]?|primarydns|secondarydns)\s*="),
))

SINKHOLE_RESPONSE_RE = re.compile(
    r"\b(?:sinkhole|sinkholed)\b.{0,40}\b(?:server|domain|host|project)\b|x-sinkhole|shadowserver sinkhole"
    r"|this domain has been sinkholed|abuse\.ch sinkhole|spamhaus sinkhole", re.I | re.M)
SEIZED_TITLE_RE = re.compile(r"domain name has been seized by|Domain Seized|Domain Seizure", re.I)
SUSPICIOUS_CONTENT_TYPES = frozenset((
    "application/x-sh", "application/x-shellscript", "text/x-sh", "text/x-shellscript", "application/hta",
    "application/x-msdos-program", "application/x-dosexec", "application/x-ms-shortcut", "application/x-bat",
    "application/bat", "application/x-elf", "application/x-executable",
))

_DOWNLOAD_EXTENSIONS = frozenset((".apk", ".bin", ".class", ".chm", ".dll", ".egg", ".exe", ".hta", ".hwp", ".lnk",
                                  ".msi", ".pif", ".ps1", ".pyz", ".scr", ".sct", ".vsto", ".wbk", ".xpi"))
_DOWNLOAD_EXCLUDED = ("cgi", "/scripts/", "/_vti_bin/", "/bin/", "/pub/softpaq/", "/bios/", "/pc-axis/")
_NONEXISTENT_PAGE = re.compile(r"defaultwebpage\.cgi", re.I)
_SCANNER_CANARY = re.compile(r"inexistent_file_name\.inexistent|test-for-some-inexistent-file|long_inexistent_path"
                             r"|some-inexistent-website\.acu", re.I)
_IOT_NAME = re.compile(
    r"(?:^|[/._-])(?:x86(?:_64)?|i[3-6]86|arm(?:v?[4-7]l?)?|aarch64|mips(?:el)?|mpsl|m68k|ppc|powerpc|sh4?|sparc|spc"
    r"|root|exploit|yarn|zte|bins?|mozi\.[am])$", re.I)
_PROXY_PROBE = re.compile(r"probe|proxy|echo|check", re.I)
_UA_WHITELIST = re.compile(r"AntiVir-NGUpd|TMSPS|AVGSETUP|SDDS|Sophos|Symantec|internal dummy connection"
                           r"|Microsoft-CryptoAPI", re.I)


def _ua_alternation() -> re.Pattern[str]:
    parts = []
    for line in data_file("ua.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if " (compatible" in line:
            parts.append(re.escape(line))
            continue
        try:
            re.compile(line)
            parts.append(line)
        except re.error:
            parts.append(re.escape(line))
    return re.compile("|".join(f"(?:{p})" for p in parts), re.I)


_UA_RE = _ua_alternation()


def encode_for_trail(text: str) -> str:
    """Make a path or body safe inside a bracketed trail."""
    return (text.replace("(", "%28").replace(" ", "%20").replace(")", "%29").replace("\r", "%0D")
            .replace("\n", "%0A"))


def suspicious_request(path: str, body: str | None, private_dst: bool) -> str | None:
    """The first matching attack category for a request path (or, with `body`, a POST body)."""
    text = unquote(body if body is not None else path)
    low = text.lower()
    if any(part in low for part in _WHITELISTED_PARTS) or not any(c in text for c in _PRECONDITION):
        return None
    for name, rx in SUSPICIOUS_CATEGORIES:
        if name == "potential data leakage" and private_dst and body is None:
            continue
        if rx.search(text):
            return name
    return None


def direct_download(host: str, path: str, private_dst: bool) -> str | None:
    """`direct .exe download (suspicious)` and the like, for short executable file names."""
    if private_dst or "." not in path or any(x in path for x in _DOWNLOAD_EXCLUDED):
        return None
    parsed = urlparse("http://" + host + path)
    if "=" in parsed.query:
        return None
    filename = parsed.path.rsplit("/", 1)[-1]
    stem, dot, ext = filename.rpartition(".")
    if not dot or f".{ext}" not in _DOWNLOAD_EXTENSIONS or len(stem) >= 10:
        return None
    return f"direct .{ext} download (suspicious)"


def suspicious_path(path: str) -> str | None:
    filename = path.split("?", 1)[0].rsplit("/", 1)[-1]
    if _NONEXISTENT_PAGE.search(filename):
        return "non-existent page (suspicious)"
    if _SCANNER_CANARY.search(path):
        return "potential web scan (suspicious)"
    return None


def iot_download(host: str, path: str) -> bool:
    """A file named after a CPU architecture fetched from a bare IP: IoT-malware droppers."""
    return bool(re.fullmatch(r"\d+\.[0-9.]+", host)) and _IOT_NAME.search(path.split("?", 1)[0]) is not None


def proxy_probe(path: str) -> bool:
    return path.startswith("http://") and _PROXY_PROBE.search(path) is not None


@lru_cache(maxsize=10_000)
def suspicious_user_agent(ua: str) -> str | None:
    """The UA trail (`masscan(/1.0)`, `M (UA)`) when the User-Agent matches the bundled list."""
    if not ua or _UA_WHITELIST.search(ua):
        return None
    m = _UA_RE.search(ua)
    if not m or not m.group(0):
        return None
    hit = m.group(0)
    before, after = ua[: m.start()], ua[m.end() :]
    escaped = ua.replace("(", "\\(").replace(")", "\\)")
    if before and after:
        trail = f"{hit} ({escaped})"
    else:
        trail = (f"({before})" if before else "") + hit + (f"({after})" if after else "")
    return trail.rstrip("\\")
