"""Payload parsers alone (no matching): one DNS response, HTTP request, TLS ClientHello and server
certificate flight per call, as the worker hands them over. Figures are µs per message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine import traffic as t
from workers.protocols.dns import parse_dns
from workers.protocols.http import parse_http_request
from workers.protocols.tls import client_hello_sni

MESSAGES = 1000

CASES: dict[str, tuple[Callable[[bytes], object], Callable[[int], bytes]]] = {
    "dns_response_4_answers": (parse_dns, lambda i: t.dns_response(
        f"cdn{i}.media-{i % 97}.example.com", ["93.184.216.34", "93.184.216.35", "93.184.216.36", "93.184.216.37"])),
    "dns_query": (parse_dns, lambda i: t.dns_query(f"www.shop{i}.example.net")),
    "http_request": (parse_http_request, lambda i: t.http_request(
        "GET", f"/static/app{i}.js?v=3", host=f"www.news{i % 50}.example.com",
        user_agent="Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        headers={"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"})),
    "tls_client_hello_sni": (client_hello_sni, lambda i: t.tls_client_hello(f"api{i}.cloud-{i % 31}.example.io")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_parse(benchmark, case: str) -> None:
    parse, build = CASES[case]
    messages = [build(i) for i in range(MESSAGES)]
    assert all(parse(m) is not None for m in messages[:10])

    def parse_all() -> None:
        for m in messages:
            parse(m)

    benchmark.pedantic(parse_all, rounds=20)
    per_message = benchmark.stats.stats.min / MESSAGES * 1e6
    benchmark.extra_info["us_per_message"] = round(per_message, 3)
    print(f"\n{case}: {per_message:.2f} µs/message")
