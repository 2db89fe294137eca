"""`maltrail bench` as users call it: table, recommendation, JSON, offered-rate mode with drops
accounted exactly, progress bar, clear errors. Small captures so each run takes a second or two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import traffic as t
from engine.benchmark import WITHIN_BEST, BenchOptions, parse_shares, prepare, recommend, representative
from engine.config import SensorConfig
from engine.pcapio import read_batches
from workers.batch import PROTO_UDP, parse_batch

ROOT = Path(__file__).resolve().parents[1]
TRAILS = "198.51.100.66,botnet (test),(static)\n203.0.113.44,malware (test),(static)\nevil-bench.example,x,(static)\n"


def _bench(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", "bench", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def trails(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "trails.csv"
    path.write_text(TRAILS)
    return path


def _table_rows(stdout: str) -> list[list[str]]:
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("workers"))
    return [line.split() for line in lines[head + 1:] if line.strip()[:1].isdigit()]


def test_throughput_runs_table_json_and_recommendation(trails: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    packets = 100_000  # each worker's CPU spans several of /proc's 10 ms ticks: 30,000 could read 0
    run = _bench("--packets", str(packets), "--workers", "1,2", "--trails", str(trails), "--json", str(out),
                 "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "[#" not in run.stderr
    rows = _table_rows(run.stdout)
    assert [r[0] for r in rows] == ["1", "2"]
    result = json.loads(out.read_text())
    assert result["capture"]["packets"] == packets and 600 < result["capture"]["mean_frame"] < 1100  # unique mix
    assert result["capture"]["source"] == "generated (unique)"
    assert result["trails"]["entries"] == 3
    assert {"cpu", "cores", "python"} <= set(result["machine"])
    for run_result, workers in zip(result["runs"], (1, 2), strict=True):
        assert run_result["workers"] == workers
        assert run_result["packets"] == run_result["captured"] == packets and run_result["drops"] == 0
        assert sum(run_result["per_worker_packets"]) == packets and len(run_result["balance"]) == workers
        assert abs(sum(run_result["balance"]) - 1) < 0.01
        assert run_result["events"] > 0  # the generated capture talks to trail IPs of the index
        names = {"capture", "aggregator"} | {f"worker-{i}" for i in range(workers)}
        assert set(run_result["cpu_seconds"]) == names and set(run_result["pss_mb"]) == names
        assert all(v > 0 for v in run_result["pss_mb"].values())
        assert run_result["cpu_seconds"]["worker-0"] > 0
        assert 1 <= max(run_result["peak_ring_occupancy"]) <= run_result["ring_slots"]
        assert run_result["us_per_packet"] == pytest.approx(run_result["seconds"] / packets * 1e6, rel=1e-3)
    best = max(r["packets_per_second"] for r in result["runs"])
    expected = min(r["workers"] for r in result["runs"] if r["packets_per_second"] >= (1 - WITHIN_BEST) * best)
    assert result["recommendation"]["workers"] == expected
    assert f"recommendation: {expected} worker(s), within 5% of the best throughput" in run.stdout


def test_recommendation_rules() -> None:
    runs = [{"workers": 1, "packets_per_second": 100.0, "drops": 50, "captured": 1000},
            {"workers": 2, "packets_per_second": 196.0, "drops": 0, "captured": 1000},
            {"workers": 4, "packets_per_second": 200.0, "drops": 0, "captured": 1000}]
    assert recommend(runs, None)["workers"] == 2  # 196 is within 5 % of 200
    runs[1]["packets_per_second"] = 189.0
    assert recommend(runs, None)["workers"] == 4
    assert recommend(runs, 5000.0)["workers"] == 2  # fewest with no drop
    runs[1]["drops"] = runs[2]["drops"] = 7
    advice = recommend(runs, 5000.0)
    assert advice["workers"] is None and "fewest: 2 worker(s), 7 dropped" in advice["text"]


def test_offered_rate_counts_every_drop(trails: Path, tmp_path: Path) -> None:
    """Far above what one worker can do, with a tiny ring: drops must happen, and packets
    processed + packets dropped == packets offered, exactly."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[sensor]\nring_slots = 2\nbatch_packets = 256\nring_slot_kb = 512\n")
    out = tmp_path / "r.json"
    run = _bench("-c", str(cfg), "--packets", "60000", "--workers", "1", "--trails", str(trails),
                 "--rate", "50000000", "--json", str(out))
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    (only,) = result["runs"]
    assert only["drops"] > 0
    assert only["packets"] + only["drops"] == only["captured"] == 60000
    assert only["ring_drops"] == [only["drops"]]
    assert result["recommendation"]["workers"] is None
    assert "no tested worker count keeps drops at zero at 50,000,000 packets/s" in run.stdout
    assert "drop %" in run.stdout


def test_offered_rate_within_capacity_drops_nothing(trails: Path, tmp_path: Path) -> None:
    """The default rings (4 slots of 8 MiB) hold the whole 20k-packet capture: nothing can be dropped."""
    out = tmp_path / "r.json"
    run = _bench("--packets", "20000", "--workers", "1,2", "--trails", str(trails), "--rate", "40000",
                 "--json", str(out), "--progress")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert [r["drops"] for r in result["runs"]] == [0, 0]
    assert all(r["packets"] == 20000 for r in result["runs"])
    assert all(r["achieved_offered_pps"] <= 40000 * 1.05 for r in result["runs"])  # paced, not flat out
    assert result["recommendation"]["workers"] == 1
    assert "at 40,000 packets/s offered, 1 worker(s) keep drops at zero" in run.stdout
    assert "[##" in run.stderr and "20,000/40,000 packets" in run.stderr


def test_given_capture_and_generated_trails(tmp_path: Path) -> None:
    """-r replays a given file; without --trails a generated set is used (no ../shared needed)."""
    capture = tmp_path / "dns.pcap"
    info = t.mixed_capture(capture, 8000, seed=3, mix="dns-heavy")
    out = tmp_path / "r.json"
    run = _bench("-r", str(capture), "--workers", "2", "--trail-rows", "5000", "--json", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert result["capture"]["packets"] == 8000 and result["capture"]["bytes"] == info["bytes"]
    assert result["trails"]["source"] == "generated, 5,000 rows" and result["trails"]["entries"] > 4000
    assert result["runs"][0]["packets"] == 8000


def _quic_initials(capture: str) -> tuple[int, int]:
    """(client QUIC Initials, packets) of a capture: UDP datagrams to port 443."""
    initials = packets = 0
    for batch in read_batches(capture):
        p = parse_batch(batch.meta, np.frombuffer(batch.data, np.uint8), batch.linktype)
        initials += int(((p.proto == PROTO_UDP) & (p.dport == 443)).sum())
        packets += len(batch)
    return initials, packets


def test_seed_and_shares_make_the_capture(trails: Path, tmp_path: Path) -> None:
    """--seed and --share make the capture a bench replays: another seed other packets, a share the
    proportion of its kind; the trail set stays the same."""
    made = {}
    for name, options in {"default": BenchOptions(packets=40_000, trails=str(trails)),
                          "seed": BenchOptions(packets=40_000, trails=str(trails), seed=2),
                          "quic": BenchOptions(packets=40_000, trails=str(trails), shares=parse_shares(["quic=0.04"])),
                          }.items():
        work = tmp_path / name
        work.mkdir()
        prepared = prepare(SensorConfig(), options, str(work))
        made[name] = (Path(prepared.capture).read_bytes(), _quic_initials(prepared.capture), prepared.trail_entries)
    assert made["seed"][0] != made["default"][0] and made["seed"][2] == made["default"][2] == 3
    default_share = made["default"][1][0] / made["default"][1][1]
    assert 0.003 < default_share < 0.007  # half of the 1 % are the clients' Initials, half the server's answers
    assert made["quic"][1][0] / made["quic"][1][1] == pytest.approx(4 * default_share, rel=0.15)


def test_seed_and_shares_in_the_output(trails: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    run = _bench("--packets", "20000", "--workers", "1", "--seed", "7", "--share", "quic=0.005", "--share", "dns=0.12",
                 "--trails", str(trails), "--json", str(out), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "20,000-packet unique, seed 7, dns=0.12, quic=0.005 capture" in run.stderr
    result = json.loads(out.read_text())
    assert result["capture"]["source"] == "generated (unique, seed 7, dns=0.12, quic=0.005)"
    assert result["options"]["seed"] == 7 and result["options"]["shares"]["quic"] == 0.005
    assert result["runs"][0]["packets"] == 20000


def test_rounds_in_turns_report_the_median(trails: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    run = _bench("--packets", "20000", "--workers", "1,2", "--rounds", "3", "--trails", str(trails), "--json", str(out),
                 "--no-progress")
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert [r["workers"] for r in result["runs"]] == [1, 2] and result["options"]["rounds"] == 3
    for r in result["runs"]:
        assert len(r["rounds_us_per_packet"]) == 3 and r["rounds_drops"] == [0, 0, 0]
        assert r["us_per_packet"] == sorted(r["rounds_us_per_packet"])[1]
    assert "median of 3 rounds taken in turns; µs/packet of each: 1 worker(s) " in run.stdout


def test_representative_round() -> None:
    """The median by µs/packet; with an offered rate, the round that dropped most."""
    rounds = [{"workers": 2, "us_per_packet": v, "drops": d} for v, d in ((0.9, 0), (0.7, 5), (0.8, 0))]
    assert representative(rounds, None)["us_per_packet"] == 0.8
    assert representative(rounds, None)["rounds_us_per_packet"] == [0.9, 0.7, 0.8]
    assert representative(rounds, 1e6)["drops"] == 5
    assert representative(rounds[:1], None) is rounds[0]
    assert representative([dict(r, drops=0) for r in rounds], 1e6)["us_per_packet"] == 0.8


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0,2"], "--workers: '0,2' is not a comma-separated list of worker counts (1..64)"),
    (["--workers", "two"], "--workers: 'two' is not"),
    (["-r", "missing.pcap"], "-r: missing.pcap: capture file not found"),
    (["-r", "/dev/null"], "-r: /dev/null: not a regular file (a pipe or a device cannot be replayed"),
    (["-r", "x.pcap", "--mix", "bulk"], "give a capture or a traffic mix"),
    (["--rate", "-5"], "--rate: -5 is out of range"),
    (["--packets", "0"], "--packets: 0 is out of range"),
    (["--json", "/nonexistent-dir/r.json"], "--json: cannot write /nonexistent-dir/r.json"),
    (["--trails", "nowhere.csv"], "--trails: nowhere.csv does not exist"),
    (["--seed", "-1"], "--seed: -1 is out of range"),
    (["--rounds", "0"], "--rounds: 0 is out of range (1..100)"),
    (["-r", "x.pcap", "--seed", "3"], "-r and --seed: a given capture is replayed as it is"),
    (["-r", "x.pcap", "--share", "quic=0.1"], "-r and --share: a given capture is replayed as it is"),
    (["--share", "quic"], "--share: 'quic' is not KIND=FRACTION (e.g. quic=0.005)"),
    (["--share", "bulk=0.5"], "--share: unknown kind 'bulk' (one of dns, http, tls, quic, syn, udp, icmp, ipv6)"),
    (["--share", "quic=nan"], "--share: 'nan' is not a fraction of the packets (0..1"),
    (["--share", "dns=0.6", "--share", "http=0.5"], "sum to at most 1 (given: dns=0.6, http=0.5; packet shares sum"),
    (["--mix", "bulk", "--share", "dns=0.1"], "--share: only the unique mix has per-packet shares (not --mix bulk)"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    run = _bench(*args, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith("maltrail: error: ") and message in run.stderr and run.stderr.count("\n") == 1


def test_ctrl_c_stops_the_bench_cleanly(trails: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "bench", "--packets", "300000", "--workers", "1,2",
                             "--trails", str(trails), "--rate", "100000", "--json", str(tmp_path / "r.json")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "preparing" in proc.stderr.readline()
    assert "prepared" in proc.stderr.readline()
    time.sleep(1.0)  # the first run is replaying (3 s at this rate)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "maltrail: interrupted" in err
    assert "recommendation" not in out and not (tmp_path / "r.json").exists()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"maltrail_{proc.pid}_")]
