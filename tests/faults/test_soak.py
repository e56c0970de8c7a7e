"""The soak (issue 15 part 5): bench/soak.py for 60 s through our pen.

Mixed load (kept-alive and new-connection HTTP, 10 MB transfers, UDP
through a -U pen), a control command every second and a SIGHUP every 15 s;
nothing may be lost and pen's RSS and open fds must stay flat.  Needs nginx
(Debian package nginx-light); without it the test skips.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOAK = REPO / "bench" / "soak.py"
DURATION = 60
# The slopes are fitted to samples taken with the load paused (no transfer
# in flight, the kept-alive connections open), after a 10 s warm-up, so
# they carry no in-flight noise: on this machine every run so far gave
# exactly +0.00 for both.  What a leak gives, measured by running the soak
# against our pen with one injected into relay.Conn: keeping a 64-byte
# object per connection +630 KiB/min, keeping one fd per 1000 connections
# +12 fds/min.  The limits sit well below those and above what a bounded,
# one-off step gives: pen's pipe pool growing by one pipe (2 fds) in mid-run
# fits to about +3.6 fds/min; single pages of RSS come and go.
MAX_RSS_KIB_PER_MIN = 256
MAX_FDS_PER_MIN = 4


def nginx_missing():
    return not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK))


@pytest.mark.timeout(DURATION + 90)
@pytest.mark.skipif(nginx_missing(), reason="the soak needs nginx "
                    "(Debian: apt-get install -y nginx-light)")
def test_a_60_second_soak_loses_nothing_and_leaks_nothing(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--duration", str(DURATION),
         "--hup-every", "15", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=DURATION + 80,
        stdin=subprocess.DEVNULL)
    assert out.exists(), (f"soak.py exited {done.returncode}\n{done.stdout[-4000:]}"
                          f"\n{done.stderr[-4000:]}")
    doc = json.loads(out.read_text())
    report = done.stdout[-3000:]
    assert doc["died"] == [], report
    assert doc["lost_connections"] == 0 and doc["lost_bytes"] == 0, report
    for kind, load in doc["loads"].items():
        assert load["ok"] > 0, (kind, report)
    assert doc["loads"]["bulk"]["bytes_ok"] >= 50 * 10 ** 7, report   # 50 x 10 MB
    assert doc["control"]["failed"] == 0 and doc["control"]["ok"] >= 100, report
    assert doc["hups"] >= 3, report
    for name, trend in doc["trend"].items():
        assert trend["samples_fitted"] >= 8, (name, report)
        assert trend["rss_kib_per_min"] < MAX_RSS_KIB_PER_MIN, (name, report)
        assert trend["fds_per_min"] < MAX_FDS_PER_MIN, (name, report)
    assert done.returncode == 0, report
