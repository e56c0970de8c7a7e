"""Anchored paths: reachable through a directory fd kept from startup."""

import os

from pen.anchor import Anchored


def test_relative_path_survives_a_chdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pen.cfg").write_text("roundrobin\n")
    a = Anchored("pen.cfg")
    monkeypatch.chdir("/")
    with a.open() as f:
        assert f.read() == "roundrobin\n"
    a.close()


def test_moved_directory_is_still_reached(tmp_path):
    # What chroot does to a path, a rename does too: the name is gone, the
    # directory fd still leads there.
    d = tmp_path / "etc"
    d.mkdir()
    (d / "pen.cfg").write_text("one\n")
    a = Anchored(str(d / "pen.cfg"))
    d.rename(tmp_path / "elsewhere")
    with a.open() as f:
        assert f.read() == "one\n"
    # absolute names below the old directory map through the fd as well
    (tmp_path / "elsewhere" / "inc.cfg").write_text("two\n")
    with open(str(d / "inc.cfg"), opener=a.opener) as f:
        assert f.read() == "two\n"
    a.close()


def test_replace_with_is_atomic_and_leaves_no_temporary(tmp_path):
    a = Anchored(str(tmp_path / "status.html"))
    a.replace_with("<html>1</html>")
    a.replace_with("<html>2</html>")
    assert (tmp_path / "status.html").read_text() == "<html>2</html>"
    assert sorted(os.listdir(tmp_path)) == ["status.html"]
    a.close()


def test_claimed_file_is_removed_only_while_it_is_ours(tmp_path):
    path = tmp_path / "pen.sock"
    path.write_text("ours")
    mine = Anchored(str(path), claim=True)
    (tmp_path / "new").write_text("someone else's")
    os.replace(tmp_path / "new", path)     # a new pen took the name
    mine.unlink()
    assert path.read_text() == "someone else's"
    again = Anchored(str(path), claim=True)
    again.unlink()
    assert not path.exists()
    mine.close()
    again.close()
