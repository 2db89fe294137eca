"""An upstream for `maltrail update` tests: a real HTTP server on 127.0.0.1 serving a static-trail
archive and every feed in its real format (tests/fixtures/feeds), laid out as a mirror."""

from __future__ import annotations

import io
import re
import tarfile
import urllib.parse
from pathlib import Path

from httpfixture import FixtureServer

from engine.update.feeds import FeedSpec, load_feeds

FIXTURES = Path(__file__).parent / "fixtures" / "feeds"
STATIC_PATH = "/codeload.github.com/stamparm/maltrail/tar.gz/refs/heads/master"
STATIC_FILES = {
    "malware/evilbot.txt": "# Reference: example\nevilbot-c2.example\n203.0.114.7\nwww.evilbot-panel.example\n",
    "malware/zeus.txt": "zeus-gate.example/gate.php\n185.100.87.202:8080\n",
    "suspicious/dynamic_domain.txt": "dyn-dns.example\n",
    "mass_scanner.txt": "# scanners\n45.155.205.233\n",
}
EMPTY_DATAPLANE = "# Dataplane.org - nothing today\n"


def static_archive(files: dict[str, str], top: str = "maltrail-master") -> bytes:
    """Maltrail's repository archive shape: TOP/trails/static/... plus files that are not trails."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = {f"{top}/README.md": "maltrail\n", f"{top}/trails/feeds/x.py": "# not a trail\n"}
        members.update({f"{top}/trails/static/{name}": text for name, text in files.items()})
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mirror_path(url: str) -> str:
    """Where the mirror serves `url`."""
    parts = urllib.parse.urlsplit(url)
    return f"/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")


def feed_bodies(spec: FeedSpec) -> dict[str, bytes]:
    """Mirror path -> body for one feed, from its fixture(s)."""
    out: dict[str, bytes] = {}
    if spec.name == "trickbot":
        out[mirror_path(spec.urls[0])] = (FIXTURES / "trickbot.html").read_bytes()
        xml = re.sub(r"\{[^}]*\}", "config.conf_20200915.xml", spec.follow_url)
        out[mirror_path(xml)] = (FIXTURES / "trickbot.xml").read_bytes()
        return out
    for url in spec.urls:
        if spec.name == "dataplane":
            fixture = FIXTURES / f"dataplane.{url.rsplit('/', 1)[1]}"
            out[mirror_path(url)] = fixture.read_bytes() if fixture.is_file() else EMPTY_DATAPLANE.encode()
        else:
            (fixture,) = [p for p in FIXTURES.iterdir() if p.name.split(".")[0] == spec.name]
            out[mirror_path(url)] = fixture.read_bytes()
    return out


class Upstream:
    """The fixture server with every feed and the static archive routed, each with an ETag."""

    def __init__(self, server: FixtureServer) -> None:
        self.server = server
        self.feeds = load_feeds()
        self.paths: dict[str, list[str]] = {}
        for name, spec in self.feeds.items():
            bodies = feed_bodies(spec)
            self.paths[name] = list(bodies)
            for path, body in bodies.items():
                self.serve(path, body)
        self.serve(STATIC_PATH, static_archive(STATIC_FILES))

    def serve(self, path: str, body: bytes, **kwargs: object) -> None:
        kwargs.setdefault("etag", f'"{abs(hash(body))}"')
        self.server.route(path, body, **kwargs)  # type: ignore[arg-type]

    def config(self, path: Path, **update: object) -> Path:
        """A maltrail.toml with [update] pointing at this upstream (mirror) plus `update` keys."""
        values = {"mirror": self.server.url, "timeout": 5, "retries": 0, **update}
        lines = ["[update]"] + [f"{key} = {_toml(value)}" for key, value in values.items()]
        path.write_text("\n".join(lines) + "\n")
        return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)
