"""The admin web listener with a real pen: pages, metrics, actions, ACL,
passwords, and the bounds that keep a bad browser off the data path.

pen refuses a control port to root unless -u is given, so every pen here
gets `-u <current user>` (the control socket checks what the page did)."""

import base64
import json
import os
import pwd
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import TIMEOUT, banner, free_port, listening, wait_until

from pen import admin

ME = pwd.getpwuid(os.getuid()).pw_name


def run_penctl(ctl, *words):
    return subprocess.run([sys.executable, "-m", "penctl", f"127.0.0.1:{ctl}", *words],
                          capture_output=True, text=True, timeout=TIMEOUT * 2)


def penctl(ctl, *words):
    proc = run_penctl(ctl, *words)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


def server_json(ctl, i):
    """Server i as the control socket's `status json` has it."""
    return json.loads(penctl(ctl, "status", "json"))["servers"][i]


def drain_supported(ctl):
    return "unknown keyword" not in run_penctl(ctl, "server", "0", "drain").stdout


def get(port, path="/", auth=None):
    """(status, headers, body bytes) of a GET."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


def post(port, path, fields, auth=None):
    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if auth is not None:
        req.add_header("Authorization",
                       "Basic " + base64.b64encode(auth.encode()).decode())
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=TIMEOUT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def answers(port):
    """True once a GET of /status.json is answered (a full pen closes new
    admin connections at once)."""
    try:
        return get(port, "/status.json")[0] == 200
    except OSError:
        return False


def token_of(page):
    text = page.decode()
    marker = 'name="csrf" value="'
    start = text.index(marker) + len(marker)
    return text[start:text.index('"', start)]


def raw(port, data, timeout=TIMEOUT):
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def farm(pen, backends, tmp_path):
    """start(*config_lines) -> (admin_port, control_port, listen_port, backends)"""
    def start(*lines, n=2, options=()):
        bs = backends(n)
        adm, ctl, port = free_port(), free_port(), free_port()
        cfg = tmp_path / "pen.cfg"
        cfg.write_text(f"admin_listen 127.0.0.1:{adm}\n" + "".join(l + "\n" for l in lines))
        pen("-u", ME, *options, "-C", f"127.0.0.1:{ctl}", "-F", cfg, f"127.0.0.1:{port}",
            *[b.spec for b in bs], port=port)
        assert wait_until(lambda: listening(adm) and listening(ctl))
        return adm, ctl, port, bs
    return start


def test_status_json_and_page(farm):
    adm, ctl, port, bs = farm()
    assert banner(port) in ("S0", "S1")
    status, headers, body = get(adm, "/status.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    doc = json.loads(body)
    assert [s["port"] for s in doc["servers"]] == [b.port for b in bs]
    assert doc["counters"]["accepted"] >= 1
    status, headers, page = get(adm, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'id="server-0"' in page and b'id="server-1"' in page
    assert b">up<" in page
    assert get(adm, "/admin.js")[0] == 200
    assert get(adm, "/nothing")[0] == 404


def test_metrics_parse_as_prometheus_text(farm):
    adm, ctl, port, bs = farm()
    banner(port)
    status, headers, body = get(adm, "/metrics")
    assert status == 200 and "version=0.0.4" in headers["Content-Type"]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    up = families["pen_server_up"]
    assert up.type == "gauge"
    assert sorted(s.labels["server"] for s in up.samples) == ["0", "1"]
    assert all(s.value == 1 for s in up.samples)
    assert "pen_accepted" in families          # counter names lose _total
    assert families["pen_accepted"].samples[0].value >= 1


def test_post_needs_the_token_and_then_disables(farm):
    adm, ctl, port, bs = farm()
    status, body = post(adm, "/server/1", {"action": "disable"})
    assert status == 403 and b"csrf" in body
    status, body = post(adm, "/server/1", {"action": "disable", "csrf": "guess"})
    assert status == 403
    assert not server_json(ctl, 1)["disabled"]
    token = token_of(get(adm, "/")[2])
    status, body = post(adm, "/server/1", {"action": "disable", "csrf": token})
    assert status == 303, body
    assert server_json(ctl, 1)["disabled"]
    assert all(banner(port) == "S0" for _ in range(4))
    assert b">disabled<" in get(adm, "/")[2]
    status, body = post(adm, "/server/1", {"action": "enable", "csrf": token})
    assert status == 303 and not server_json(ctl, 1)["disabled"]
    status, body = post(adm, "/server/0", {"action": "blacklist", "seconds": "60",
                                           "csrf": token})
    assert status == 303 and 55 <= server_json(ctl, 0)["blacklisted_for"] <= 60
    status, body = post(adm, "/server/7", {"action": "disable", "csrf": token})
    assert status == 400 and b"bad server" in body


def test_drain_action(farm):
    adm, ctl, port, bs = farm()
    if not drain_supported(ctl):
        pytest.skip("this pen has no `server N drain` yet (pen/servers.py state machine)")
    penctl(ctl, "server", "0", "enable")
    token = token_of(get(adm, "/")[2])
    status, body = post(adm, "/server/0", {"action": "drain", "csrf": token})
    assert status == 303, body
    assert server_json(ctl, 0)["state"] == "draining"


def test_admin_acl_refuses(farm):
    adm, ctl, port, bs = farm("acl 1 deny 127.0.0.1", "admin_acl 1")
    status, headers, body = get(adm, "/status.json")
    assert status == 403 and b"admin_acl 1" in body
    assert banner(port) in ("S0", "S1")        # the data path is not affected
    penctl(ctl, "admin_acl", "0")
    assert get(adm, "/status.json")[0] == 200


def test_password_file(farm, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pen", "--hash-password"],
                          input="open sesame\n", capture_output=True, text=True,
                          timeout=TIMEOUT * 2)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert admin.verify_password("open sesame", line)
    pw = tmp_path / "admin.pw"
    pw.write_text(f"admin:{line}\n")
    adm, ctl, port, bs = farm(f"admin_password_file {pw}")
    status, headers, body = get(adm, "/")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert get(adm, "/", auth="admin:wrong")[0] == 401
    assert get(adm, "/", auth="eve:open sesame")[0] == 401
    status, headers, page = get(adm, "/", auth="admin:open sesame")
    assert status == 200
    assert get(adm, "/metrics", auth="admin:open sesame")[0] == 200     # cached
    token = token_of(page)
    assert post(adm, "/server/0", {"action": "disable", "csrf": token})[0] == 401
    status, body = post(adm, "/server/0", {"action": "disable", "csrf": token},
                        auth="admin:open sesame")
    assert status == 303 and server_json(ctl, 0)["disabled"]


@pytest.mark.skipif(os.geteuid() != 0, reason="-j (chroot) needs root")
def test_password_login_under_chroot(farm, tmp_path):
    """The password check's thread starts at the first login, inside the
    jail, where nothing can be imported any more."""
    jail = tmp_path / "jail"
    jail.mkdir()
    pw = tmp_path / "admin.pw"
    pw.write_text(admin.hash_password("pw") + "\n")
    adm, ctl, port, bs = farm(f"admin_password_file {pw}", options=("-j", jail))
    assert get(adm, "/status.json", auth="x:pw")[0] == 200
    assert get(adm, "/status.json", auth="x:no")[0] == 401
    assert banner(port) in ("S0", "S1")


def test_bounds_keep_the_data_path_free(farm):
    adm, ctl, port, bs = farm()
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * (admin.MAX_HEAD + 10) + b"\r\n\r\n"
    assert raw(adm, big).startswith(b"HTTP/1.1 431")
    body = b"x" * (admin.MAX_BODY + 1)
    reply = raw(adm, b"POST /server/0 HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                % len(body) + body)
    assert reply.startswith(b"HTTP/1.1 413")
    idle = []
    try:
        for _ in range(admin.MAX_CLIENTS):      # silent browsers fill every slot
            s = socket.create_connection(("127.0.0.1", adm), TIMEOUT)
            s.sendall(b"GET / HTTP/1.1\r\n")
            idle.append(s)
        assert all(banner(port) in ("S0", "S1") for _ in range(5))
        assert penctl(ctl, "servers").count("addr") == 2
        # one more is answered: it takes the slot of the oldest, which is closed
        assert raw(adm, b"GET /status.json HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200")
        assert idle[0].recv(4096) == b""
        # a head never finished is answered 408 once CLIENT_TIMEOUT runs out
        idle[1].settimeout(admin.CLIENT_TIMEOUT + TIMEOUT)
        assert idle[1].recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for s in idle:
            s.close()
    assert wait_until(lambda: answers(adm))     # slots come back as pen sees the closes


def test_admin_listen_moves_and_stops(farm):
    adm, ctl, port, bs = farm()
    new = free_port()
    assert penctl(ctl, "admin_listen", f"127.0.0.1:{new}") == ""
    assert wait_until(lambda: listening(new) and not listening(adm))
    assert penctl(ctl, "admin_listen").strip() == f"127.0.0.1:{new}"
    assert get(new, "/status.json")[0] == 200
    # a port that cannot be bound: an error, and the old listener stays
    reply = run_penctl(ctl, "admin_listen", f"127.0.0.1:{ctl}").stdout
    assert "admin" in reply and "cannot listen" in reply
    assert listening(new)
    penctl(ctl, "no", "admin_listen")
    assert wait_until(lambda: not listening(new))


def test_admin_on_a_unix_socket(pen, backends, tmp_path):
    (b,) = backends(1)
    path, port = tmp_path / "admin.sock", free_port()
    pen("-o", f"admin_listen {path}", f"127.0.0.1:{port}", b.spec, port=port)
    assert wait_until(lambda: path.exists())
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(TIMEOUT)
        s.connect(str(path))
        s.sendall(b"GET /status.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["servers"][0]["port"] == b.port


def test_a_dns_name_in_host_is_refused_without_a_login(farm):
    adm, ctl, port, bs = farm()
    reply = raw(adm, b"GET / HTTP/1.1\r\nHost: rebind.example:%d\r\n\r\n" % adm)
    assert reply.startswith(b"HTTP/1.1 403") and b"DNS rebinding" in reply


def test_a_unix_admin_socket_is_removed_on_exit(tmp_path):
    from conftest import Pen, free_port, wait_until
    path = tmp_path / "admin.sock"
    port = free_port()
    p = Pen(["-o", f"admin_listen {path}", f"127.0.0.1:{port}", "127.0.0.1:9"], port=port)
    assert wait_until(path.exists)
    rc, err = p.stop()
    assert rc == 0, err
    assert not path.exists()
