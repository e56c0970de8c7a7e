"""pen/admin.py, the pure parts: request parsing, forms and actions, CSRF,
password hashes and Basic credentials, the page, and the admin commands."""

import base64
import io
import json

import pytest

from pen import admin, commands
from pen.addr import parse_listen
from pen.admin import HttpError, Request
from pen.config import dump
from pen.servers import parse_backend
from pen.state import Settings, State

NOW = 1000.0
WALL = 1_700_000_000.0
TOKEN = "t0ken-abc"
FAST = dict(n=2 ** 4, r=1, p=1)      # cheap scrypt for tests of the format


def make_state():
    st = Settings(listen=parse_listen("127.0.0.1:8000"))
    return State(st, [parse_backend("127.0.0.1:9001", 8000, 0),
                      parse_backend("127.0.0.1:9002", 8000, 1)])


def request(method, path, body=b"", headers=None):
    r = Request(method, path, "", headers or {})
    r.body = body
    return r


# --- request heads ---------------------------------------------------------------------


def test_parse_head_reads_method_path_query_and_headers():
    r = admin.parse_head(b"GET /status.json?x=1 HTTP/1.1\r\nHost: a\r\n"
                         b"Content-Length: 3\r\n\r\n")
    assert (r.method, r.path, r.query) == ("GET", "/status.json", "x=1")
    assert r.headers == {"host": "a", "content-length": "3"}
    assert r.content_length == 3


def test_parse_head_accepts_bare_newlines():
    r = admin.parse_head(b"GET / HTTP/1.0\nHost: a\n\n")
    assert r.path == "/" and r.headers["host"] == "a"


@pytest.mark.parametrize("head, status, words", [
    (b"\r\n\r\n", 400, "empty"),
    (b"GET /\r\n\r\n", 400, "request line"),
    (b"GET / SPDY/3\r\n\r\n", 400, "request line"),
    (b"GET http://x/ HTTP/1.1\r\n\r\n", 400, "target"),
    (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\n Folded: x\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "repeated"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "chunked"),
    (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * (admin.MAX_HEADERS + 1) + b"\r\n", 431, "header"),
])
def test_parse_head_refuses_bad_requests(head, status, words):
    with pytest.raises(HttpError) as e:
        admin.parse_head(head)
    assert e.value.status == status
    assert words in str(e.value)


def test_bad_content_length_is_a_400():
    r = admin.parse_head(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n")
    with pytest.raises(HttpError) as e:
        r.content_length
    assert e.value.status == 400


def test_head_end_finds_the_blank_line():
    assert admin.head_end(b"GET / HTTP/1.1\r\n\r\nbody") == 18
    assert admin.head_end(b"GET / HTTP/1.1\n\nbody") == 16
    assert admin.head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") == -1


# --- forms and actions ---------------------------------------------------------------------


def test_parse_form_and_its_field_limit():
    assert admin.parse_form(b"a=1&b=x+y&c=%2F") == {"a": "1", "b": "x y", "c": "/"}
    with pytest.raises(HttpError):
        admin.parse_form(b"&".join(b"f%d=1" % i for i in range(admin.MAX_FIELDS + 1)))
    with pytest.raises(HttpError):
        admin.parse_form("é=1".encode())


@pytest.mark.parametrize("form, line", [
    ({"server": "0", "action": "disable"}, "server 0 disable"),
    ({"server": "1", "action": "enable"}, "server 1 enable"),
    ({"server": "1", "action": "drain"}, "server 1 drain"),
    ({"server": "0", "action": "blacklist", "seconds": "30"}, "server 0 blacklist 30"),
])
def test_action_line(form, line):
    assert admin.action_line(form, 2) == line


@pytest.mark.parametrize("form, words", [
    ({"server": "2", "action": "disable"}, "bad server"),
    ({"server": "-1", "action": "disable"}, "bad server"),
    ({"server": "\u00b9", "action": "disable"}, "bad server"),     # isdigit(), not int()
    ({"server": "9" * 5000, "action": "disable"}, "bad server"),  # int() refuses it
    ({"server": "0", "action": "exit"}, "bad action"),
    ({"server": "0", "action": "blacklist"}, "bad seconds"),
    ({"server": "0", "action": "blacklist", "seconds": "1; exit"}, "bad seconds"),
])
def test_action_line_refuses(form, words):
    with pytest.raises(HttpError) as e:
        admin.action_line(form, 2)
    assert e.value.status == 400 and words in str(e.value)


def test_post_without_or_with_a_wrong_token_is_403():
    state = make_state()
    for body in (b"action=disable", b"action=disable&csrf=wrong", b"action=disable&csrf="):
        with pytest.raises(HttpError) as e:
            admin.route(state, request("POST", "/server/0", body), TOKEN, NOW, WALL)
        assert e.value.status == 403


def test_post_with_the_token_gives_the_command_line():
    state = make_state()
    body = f"action=disable&csrf={TOKEN}".encode()
    out, line = admin.route(state, request("POST", "/server/1", body), TOKEN, NOW, WALL)
    assert out is None and line == "server 1 disable"


def test_post_server_in_form_and_path_must_agree():
    body = f"action=disable&server=0&csrf={TOKEN}".encode()
    with pytest.raises(HttpError) as e:
        admin.route(make_state(), request("POST", "/server/1", body), TOKEN, NOW, WALL)
    assert e.value.status == 400


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nope", 404), ("DELETE", "/", 405), ("POST", "/", 405),
    ("POST", "/elsewhere", 404)])
def test_route_refuses(method, path, status):
    with pytest.raises(HttpError) as e:
        admin.route(make_state(), request(method, path), TOKEN, NOW, WALL)
    assert e.value.status == status


@pytest.mark.parametrize("host, ok", [
    ("", True), ("127.0.0.1:8080", True), ("localhost:8080", True), ("LOCALHOST", True),
    ("[::1]:8080", True), ("::1", True), ("10.1.2.3", True),
    ("evil.example:8080", False), ("lb.example.com", False), ("127.0.0.1.nip.io", False)])
def test_host_guard_against_dns_rebinding(host, ok):
    state = make_state()
    req = request("GET", "/status.json", headers={"host": host})
    if ok:
        assert admin.route(state, req, TOKEN, NOW, WALL)[0].startswith(b"HTTP/1.1 200")
    else:
        with pytest.raises(HttpError) as e:
            admin.route(state, req, TOKEN, NOW, WALL)
        assert e.value.status == 403 and "DNS rebinding" in str(e.value)
        state.settings.admin_passwords = ((None, "x"),)    # with a login, any name
        assert admin.route(state, req, TOKEN, NOW, WALL)[0].startswith(b"HTTP/1.1 200")


def test_route_serves_json_metrics_and_page():
    state = make_state()
    out, _ = admin.route(state, request("GET", "/status.json"), TOKEN, NOW, WALL)
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"application/json" in head
    assert len(json.loads(body)["servers"]) == 2
    out, _ = admin.route(state, request("GET", "/metrics"), TOKEN, NOW, WALL)
    assert b"version=0.0.4" in out and b"pen_server_up" in out
    out, _ = admin.route(state, request("GET", "/"), TOKEN, NOW, WALL)
    assert b"text/html" in out and TOKEN.encode() in out


def test_response_has_length_and_security_headers():
    out = admin.response(200, "hé")
    head, body = out.split(b"\r\n\r\n", 1)
    assert body == "hé".encode() and b"Content-Length: 3" in head
    assert b"X-Frame-Options: DENY" in head and b"Connection: close" in head


# --- the page ---------------------------------------------------------------------------------


def test_page_shows_servers_states_and_forms():
    state = make_state()
    commands.execute(state, "server 1 disable", now=NOW)
    commands.execute(state, "server 0 blacklist 60", now=NOW)
    page = admin.render_page(state, NOW, WALL, TOKEN)
    assert 'id="server-0"' in page and 'id="server-1"' in page
    assert ">blacklisted<" in page and ">disabled<" in page
    assert page.count(f'name="csrf" value="{TOKEN}"') == 2 * len(admin.ACTIONS)
    for action in admin.ACTIONS:
        assert f'id="{action}-1"' in page


class FakeConn:
    id, phase, client_ip, client_port, index = 7, "CONNECTING", "10.0.0.9", 4242, 1
    c2s = s2c = client = server = None
    sx = rx = 0


def test_page_lists_connections():
    state = make_state()
    state.conns[7] = FakeConn()
    page = admin.render_page(state, NOW, WALL, TOKEN)
    table = page[page.index('<table id="conns">'):]
    assert "<td>7</td><td>CONNECTING</td><td>10.0.0.9</td><td>4242</td><td>1</td>" in table


def test_page_escapes_what_the_user_wrote():
    state = make_state()
    state.settings.algorithm = "<script>"
    assert "<script>" not in admin.render_page(state, NOW, WALL, TOKEN).replace(
        '<script src="/admin.js" defer></script>', "")


# --- passwords --------------------------------------------------------------------------------


def test_hash_and_verify():
    line = admin.hash_password("sécret", **FAST)
    assert line.startswith("scrypt$16$1$1$")
    assert admin.verify_password("sécret", line)
    assert not admin.verify_password("secret", line)
    assert admin.hash_password("sécret", **FAST) != line      # salted


def test_default_parameters_verify():
    line = admin.hash_password("pw")
    assert line.split("$")[1:4] == [str(admin.SCRYPT_N), str(admin.SCRYPT_R),
                                    str(admin.SCRYPT_P)]
    assert admin.verify_password("pw", line)


@pytest.mark.parametrize("bad", ["", "plain", "scrypt$16$1$1$x", "md5$1$1$1$AA==$AA==",
                                 "scrypt$15$1$1$AA==$AA==", "scrypt$16$1$1$!!$AA==",
                                 "scrypt$1048576$8$1$AA==$AA=="])
def test_bad_hash_lines(bad):
    with pytest.raises(ValueError):
        admin.parse_hash(bad)
    assert not admin.verify_password("x", bad)


def test_password_file_entries_and_errors():
    a, b = admin.hash_password("a", **FAST), admin.hash_password("b", **FAST)
    entries = admin.parse_password_file(f"# admins\n\n{a}\nbob:{b}\n", "pw")
    assert entries == ((None, a), ("bob", b))
    assert admin.check_credentials("anyone", "a", entries)
    assert admin.check_credentials("bob", "b", entries)
    assert not admin.check_credentials("alice", "b", entries)
    assert not admin.check_credentials("bob", "c", entries)
    with pytest.raises(ValueError, match=r"pw:2: expected scrypt"):
        admin.parse_password_file(f"{a}\nnonsense\n", "pw")
    with pytest.raises(ValueError, match="no password hashes"):
        admin.parse_password_file("# nothing\n", "pw")


def test_basic_credentials():
    value = "Basic " + base64.b64encode(b"bob:pa:ss").decode()
    assert admin.basic_credentials(value) == ("bob", "pa:ss")
    assert admin.basic_credentials("") is None
    assert admin.basic_credentials("Bearer abc") is None
    assert admin.basic_credentials("Basic !!!") is None
    assert admin.basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


class Tty(io.StringIO):
    def isatty(self):
        return False


def test_hash_password_main_reads_stdin(capsys):
    out = io.StringIO()
    assert admin.hash_password_main(Tty("pw\n"), out) == 0
    assert admin.verify_password("pw", out.getvalue().strip())
    assert admin.hash_password_main(Tty("\n"), io.StringIO()) == 1
    assert "empty password" in capsys.readouterr().err


# --- the commands -----------------------------------------------------------------------------


def test_admin_commands_parse_apply_and_dump(tmp_path):
    state = make_state()
    replies, effects = commands.execute(state, "admin_listen 127.0.0.1:8100")
    assert effects == [("admin", parse_listen("127.0.0.1:8100"))]
    state.settings.admin_listen = effects[0][1]       # what App.set_admin does
    assert commands.execute(state, "admin_listen") == (["127.0.0.1:8100"], [])
    assert commands.execute(state, "admin_acl 3") == (["3"], [])
    pw = tmp_path / "pw"
    pw.write_text(admin.hash_password("x", **FAST) + "\n")
    assert commands.execute(state, f"admin_password_file {pw}") == ([], [])
    assert len(state.settings.admin_passwords) == 1
    lines = dump(state, "/tmp/x", WALL)
    assert "admin_listen 127.0.0.1:8100" in lines
    assert "admin_acl 3" in lines
    assert f"admin_password_file {pw}" in lines
    assert commands.execute(state, "no admin_listen") == ([], [("admin", None)])
    assert commands.execute(state, "no admin_password_file") == ([], [])
    assert state.settings.admin_passwords == ()


@pytest.mark.parametrize("line, words", [
    ("admin_listen 127.0.0.1:99999", "admin_listen"),
    ("admin_listen a b", "unexpected"),
    ("admin_acl 10", "out of range"),
    ("admin_password_file /nonexistent/pw", "cannot read"),
    ("no admin_listen x", "unexpected"),
])
def test_admin_commands_refuse(line, words):
    state = make_state()
    replies, effects = commands.execute(state, line)
    assert effects == [] and len(replies) == 1 and words in replies[0]
    assert state.settings.admin_acl == 0 and state.settings.admin_password_file is None


def test_a_bad_password_file_changes_nothing(tmp_path):
    state = make_state()
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(admin.hash_password("x", **FAST) + "\n")
    bad.write_text("not a hash\n")
    commands.execute(state, f"admin_password_file {good}")
    replies, _ = commands.execute(state, f"admin_password_file {bad}")
    assert f"{bad}:1" in replies[0]
    assert state.settings.admin_password_file == str(good)
    assert len(state.settings.admin_passwords) == 1
