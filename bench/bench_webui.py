"""Dashboard server on a big day: one million events, first page of threats over HTTP.

The day is written in Maltrail's line format by a bulk writer (numpy picks, one join per 100k
lines): 5,000 sources, 2,000 trails, 20,000 (source, trail) threats with a skewed popularity, IP
and DNS events. The index is built from the file (timed and printed), then a real
`maltrail server` answers `GET /api/threats` for that day; the figure is the first page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest

from engine.severity import Severity
from webui.auth import UserStore
from webui.store import Ingester

EVENTS = 1_000_000
DAY = "2026-03-10"
INFOS = ("malware (bench)", "botnet c2 (bench)", "known attacker", "mass scanner", "suspicious domain (bench)",
         "phishing (bench)", "ransomware (malware)")


def write_day(path: Path, events: int = EVENTS, seed: int = 5) -> int:
    rng = np.random.default_rng(seed)
    sources = [f"10.{i // 250 % 250}.{i % 250}.{i // 62500 + 1}" for i in range(5000)]
    trails = [f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}" if i % 2 else f"bad{i}.example-{i % 97}.com"
              for i in range(2000)]
    pair_src = rng.integers(0, len(sources), 20_000)
    pair_trail = rng.integers(0, len(trails), 20_000)
    weights = 1.0 / np.arange(1, 20_001) ** 0.8
    picks = rng.choice(20_000, size=events, p=weights / weights.sum())
    base = time.mktime(time.strptime(DAY, "%Y-%m-%d"))
    seconds = np.sort(rng.integers(0, 86_400 * 1_000_000, events))
    sports = rng.integers(1024, 65535, events)
    with open(path, "w") as f:
        for start in range(0, events, 100_000):
            lines = []
            for i in range(start, min(events, start + 100_000)):
                p = picks[i]
                src, t = sources[pair_src[p]], int(pair_trail[p])
                trail = trails[t]
                us = int(seconds[i])
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(base + us // 1_000_000))
                info = INFOS[t % len(INFOS)]
                if t % 2:
                    port = 443 if t % 3 else 80
                    lines.append(f'"{stamp}.{us % 1_000_000:06d}" bench {src} {sports[i]} {trail} {port} '
                                 f'TCP IP {trail} "{info}" (static)\n')
                else:
                    lines.append(f'"{stamp}.{us % 1_000_000:06d}" bench {src} {sports[i]} 192.0.2.53 53 UDP DNS '
                                 f'{trail} "{info}" (static)\n')
            f.write("".join(lines))
    return events


@pytest.fixture(scope="module")
def big_day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    logs = tmp_path_factory.mktemp("webui-bench") / "logs"
    logs.mkdir()
    started = time.perf_counter()
    write_day(logs / f"{DAY}.log")
    print(f"\nwrote {EVENTS} events in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    ingester = Ingester(logs, logs / ".webui", Severity([]))
    added = ingester.sync()
    ingester.close()
    build = time.perf_counter() - started
    print(f"index build: {added} events in {build:.1f} s ({added / build:,.0f} events/s)")
    assert added == EVENTS
    users = UserStore(logs / ".webui" / "users.json")
    users.set_user("bench", "bench-password-1", admin=True)
    users.set_user("scoped", "scoped-password-1", scope=["10.0.0.0/16", "198.18.0.0/24"])
    return logs


def _login(url: str, user: str, password: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    login = urllib.request.Request(url + "api/login", json.dumps({"username": user, "password": password}).encode(),
                                   {"Content-Type": "application/json"})
    opener.open(login, timeout=30).read()
    return opener


def test_first_page_of_a_million_event_day(benchmark, big_day: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "server", "--log-dir", str(big_day),
                             "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        opener = _login(url, "bench", "bench-password-1")
        page_url = f"{url}api/threats?from={DAY}&to={DAY}&per_page=50"

        def first_page() -> dict:
            with opener.open(page_url, timeout=30) as resp:
                return json.loads(resp.read())

        result = benchmark.pedantic(first_page, rounds=5, warmup_rounds=1)
        assert result["total"] > 10_000 and len(result["rows"]) == 50
        assert sum(r["count"] for r in result["rows"]) > 0
        best = benchmark.stats.stats.min if benchmark.stats else 0.0
        print(f"first page of /api/threats over {EVENTS} events ({result['total']} threats): "
              f"best {best * 1000:.0f} ms")
        for sort in ("severity", "count", "dst_ip"):
            started = time.perf_counter()
            with opener.open(f"{page_url}&sort={sort}", timeout=30) as resp:
                json.loads(resp.read())
            print(f"  sort={sort}: {(time.perf_counter() - started) * 1000:.0f} ms")
        started = time.perf_counter()
        with opener.open(f"{url}api/threats?from={DAY}&to={DAY}&q=port:443%20info:malware", timeout=30) as resp:
            json.loads(resp.read())
        print(f"  with an event-level search (raw events): {(time.perf_counter() - started) * 1000:.0f} ms")
        for path in (f"api/stats?from={DAY}", f"api/stats?from={DAY}&q=proto:tcp", f"api/days?from={DAY}"):
            started = time.perf_counter()
            with opener.open(url + path, timeout=30) as resp:
                json.loads(resp.read())
            print(f"  /{path}: {(time.perf_counter() - started) * 1000:.0f} ms")
        scoped = _login(url, "scoped", "scoped-password-1")
        started = time.perf_counter()
        with scoped.open(page_url, timeout=30) as resp:
            body = json.loads(resp.read())
        print(f"  scoped user ({body['total']} threats in scope): {(time.perf_counter() - started) * 1000:.0f} ms")
    finally:
        proc.terminate()
        proc.wait(10)
