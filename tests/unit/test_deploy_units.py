"""The pure parts of the deployment fixes (issue 9): where a path named
after startup leads, atomic replacement, the fd warning, penctl's error
status, and the command-line checks.  No sockets."""

import os

import pytest

import penctl
from pen.__main__ import MissingListen, _docopt_error, parse_args
from pen.anchor import Anchored, Reach
from pen.daemon import fd_warning
from pen.errors import ConfigError
from pen.state import Settings


def test_paths_keep_the_start_directory_after_a_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = Reach()
    r.pin()
    monkeypatch.chdir("/")                        # what detaching does
    assert r.abspath("conf/pen.cfg") == f"{tmp_path}/conf/pen.cfg"
    assert r.abspath("/etc/pen.cfg") == "/etc/pen.cfg"
    assert r.locate("x.cfg") == (None, f"{tmp_path}/x.cfg")
    r.replace("rel2.cfg", "server 0\n")
    assert (tmp_path / "rel2.cfg").read_text() == "server 0\n"
    assert not os.path.exists("/rel2.cfg")


def test_an_anchored_directory_is_used_first(tmp_path, monkeypatch):
    import pen.anchor as anchor
    d = tmp_path / "etc"
    d.mkdir()
    (d / "pen.cfg").write_text("one\n")
    a = Anchored(str(d / "pen.cfg"))
    try:
        fd, name = anchor.reach.locate(str(d / "other.cfg"))
        assert (fd, name) == (a.dirfd, "other.cfg")
    finally:
        a.close()
    assert str(d) not in anchor.reach.dirs


def test_replace_is_atomic_keeps_the_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "pen.cfg"
    target.write_text("old\n")
    os.chmod(target, 0o660)
    r = Reach()
    r.replace(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o660
    assert os.listdir(tmp_path) == ["pen.cfg"]
    with pytest.raises(OSError):
        r.replace(str(tmp_path / "no" / "dir" / "x.cfg"), "x\n")
    assert os.listdir(tmp_path) == ["pen.cfg"]


def test_fd_warning_only_when_x_cannot_fit_the_hard_limit():
    st = Settings(conn_max=500)
    assert fd_warning(st, 65536) is None
    text = fd_warning(st, 1024)
    assert text.startswith("-x 500 connections may need 2032 file descriptors")
    assert "hard limit (RLIMIT_NOFILE) is 1024" in text and "lower -x to 248" in text


@pytest.mark.parametrize("words,reply,error", [
    (["blacklist"], "30\n", False),
    (["blacklist", "x"], "blacklist: 'x' is not a number\n", True),
    (["frobnicate"], "do_cmd: ignoring command starting with 'frobnicate'\n", True),
    (["write"], "", False),
    (["write", "/x"], "write: cannot write /x: Permission denied\n", True),
    (["include", "a.cfg"], "a.cfg:3: do_cmd: ignoring command starting with 'x'\n", True),
    (["include", "a.cfg"], "", False),
    (["mode"], "control: access from 127.0.0.1 denied by control_acl 2\n", True),
    (["servers"], "0 addr 127.0.0.1 port 80 conn 0 max 0 hard 0\n", False),
])
def test_penctl_knows_an_error_reply(words, reply, error):
    assert penctl.is_error(words, reply.encode()) is error


def test_penctl_help_points_to_the_commands(capsys):
    assert penctl.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "penctl(1)" in out and "server N enable" in out and "2 pen answered" in out


def test_command_line_checks():
    with pytest.raises(ConfigError, match="-L no-such-protocol: protocol version not known"):
        parse_args(["-L", "no-such-protocol", "8080", "127.0.0.1:80"])
    with pytest.raises(MissingListen):
        parse_args(["-f"])
    assert parse_args(["-L", "tls1.2", "8080"]).ssl_protocol == "tls1.2"


def test_unknown_long_options_are_one_clean_line():
    from docopt import DocoptExit
    for argv, word in ((["--frobnicate"], "--frobnicate"), (["--foo=bar"], "--foo")):
        try:
            parse_args(argv + ["8080"])
        except ConfigError as e:
            assert str(e) == f"unknown option {word} (see pen --help)"
        else:
            pytest.fail("accepted")
    assert _docopt_error(DocoptExit("Warning: found unmatched (duplicate?) arguments "
                                    "[Option('-z', None, 0, True)]"), []) == \
        "unknown option -z (see pen --help)"


@pytest.mark.parametrize("name", ["\u00b2", "9" * 5000, "99999999999", "no\0body",
                                  "no-such-user-here"])
def test_a_bad_user_is_one_config_error(name):
    """-u: a user that is not there, or a number that is no uid (a digit to
    str.isdigit but not to int(), too many digits, past the uid range)."""
    from pen.daemon import resolve_user
    with pytest.raises(ConfigError, match="no such user"):
        resolve_user(name)


def test_the_inherited_fds_are_ascii_numbers():
    from pen.handover import inherited
    env = {"PEN_INHERIT": "listen=\u00b3,control=" + "9" * 5000 + ",old=12"}
    assert inherited(env) == {"old": 12}
    assert "PEN_INHERIT" not in env
