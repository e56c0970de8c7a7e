"""Smoke test of the benchmark: `bench/run.py --quick --only ours`.

Not a timed test (CI machines are noisy): it runs every scenario for about
one second against our pen only, and checks that the run finishes, writes
valid JSON and gives sane, non-zero numbers, so the benchmark never rots.
It needs wrk and nginx (Debian packages wrk, nginx-light); without them it
skips.  PEN_BENCH_OURS_CMD, if set, replaces `python -m pen` (for example
/usr/bin/pen to check the harness itself).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
BIG_SIZE = 10 * 1000 * 1000          # bench/services.py BIG_FILE


def missing_tools():
    found = {"wrk": shutil.which("wrk") or os.access("/usr/bin/wrk", os.X_OK),
             "nginx": shutil.which("nginx")
             or os.access("/usr/sbin/nginx", os.X_OK)}
    return [name for name, ok in found.items() if not ok]


@pytest.fixture(scope="module")
def bench_doc(tmp_path_factory):
    missing = missing_tools()
    if missing:
        pytest.skip(f"benchmark needs {', '.join(missing)} (Debian: "
                    f"apt-get install -y wrk nginx-light)")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--only", "ours",
         "--no-install", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=110,
        stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (
        f"bench/run.py exited {done.returncode}\n"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}")
    assert "ours/pen" not in done.stdout          # ours only: no ratio column
    return json.loads(out.read_text())


def ours(doc, scenario):
    entry = doc["results"][scenario]["ours"]
    assert not entry.get("failed"), entry.get("failed")
    assert entry["value"] is not None
    return entry


def test_json_describes_the_run(bench_doc):
    assert bench_doc["format"] == "pen-bench/1"
    assert bench_doc["config"]["targets"] == ["direct", "ours", "idlers"]
    assert bench_doc["config"]["quick"] is True
    assert bench_doc["failures"] == []
    assert set(bench_doc["results"]) == {
        "keepalive", "newconn", "bulk", "latency_p50", "latency_p99",
        "memory", "memory_fresh", "memory_http", "memory_http_fresh", "udp",
        "http_rule", "http_xff",
        "newconn_proxy_off", "newconn_proxy_v1", "newconn_proxy_v2",
        "idlers_newconn", "connlat_p50", "connlat_p99"}
    assert bench_doc["machine"]["cores"] >= 1


def test_http_scenarios_are_sane(bench_doc):
    for scenario, floor in (("keepalive", 100), ("newconn", 50)):
        entry = ours(bench_doc, scenario)
        assert entry["value"] > floor, (scenario, entry["value"])
        run = entry["runs"][0]
        assert run["errors"] <= run["requests"] // 100, (scenario, run)
        # 100-byte body plus nginx's headers: the responses came whole
        assert 100 < run["bytes"] / run["requests"] < 1000, (scenario, run)
        direct = bench_doc["results"][scenario]["direct"]
        assert direct["value"] > floor
    bulk = ours(bench_doc, "bulk")
    assert bulk["value"] > 5, bulk["value"]          # MB/s
    run = bulk["runs"][0]
    assert run["requests"] >= 1 and run["status"] == 0
    assert run["bytes"] >= run["requests"] * BIG_SIZE


def test_proxy_protocol_scenarios_are_sane(bench_doc):
    # nginx's proxy_protocol listener closes a connection whose header it
    # cannot parse: wrk would count that as an error
    for version in ("off", "v1", "v2"):
        entry = ours(bench_doc, f"newconn_proxy_{version}")
        run = entry["runs"][0]
        assert entry["value"] > 50, (version, entry["value"])
        assert run["errors"] <= run["requests"] // 100, (version, run)
        assert 100 < run["bytes"] / run["requests"] < 1000, (version, run)
    ratios = bench_doc["ratios"]
    assert ratios["newconn_proxy_v2"]["ours on/off"] > 0


def test_latency_is_sane(bench_doc):
    for pct in ("p50", "p99"):
        entry = ours(bench_doc, f"latency_{pct}")
        run = entry["runs"][0]
        assert run["requests"] > 100, run
        assert 0 < run["direct_us"] <= run["us"] + 1000, run
        assert run["us"] < 1_000_000, run                  # under a second
        assert entry["value"] == pytest.approx(run["us"] - run["direct_us"])


def test_idlers_scenario_is_sane(bench_doc):
    """Ours without and with `idlers 4` (target "idlers"), fresh connections."""
    results = bench_doc["results"]
    for target in ("ours", "idlers"):
        newconn = results["idlers_newconn"][target]
        assert not newconn.get("failed") and newconn["value"] > 50, (target, newconn)
        run = results["connlat_p50"][target]["runs"][0]
        assert run["requests"] > 50 and 0 < run["direct_us"] < 1_000_000, run
    assert "direct" in results["connlat_p99"]


def test_memory_and_udp_are_sane(bench_doc):
    memory = ours(bench_doc, "memory")
    run = memory["runs"][0]
    assert run["conns"] >= 100
    assert run["rss_before_kib"] > 0 and run["rss_after_kib"] > 0
    assert -1 < memory["value"] < 1024, memory["value"]   # KiB per conn
    fresh = ours(bench_doc, "memory_fresh")
    assert -1 < fresh["value"] < 1024, fresh["value"]
    udp = ours(bench_doc, "udp")
    assert udp["value"] > 100, udp["value"]
    assert udp["runs"][0]["requests"] > 0
