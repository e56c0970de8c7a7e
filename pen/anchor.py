"""Anchored: a file path that stays reachable after chroot and chdir.

pen opens some files again long after startup: the -F file on SIGHUP,
the -l log on rotation, the -w page on SIGUSR1, and on exit it removes
its pid file and Unix sockets.  After `-j` (chroot) those paths no longer
exist, and after detaching (chdir /) relative paths point elsewhere.  An
Anchored path holds its directory open from startup and works relative
to that directory fd, so all of these keep working.
"""

import contextlib
import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Reach:
    """Where paths named after startup lead: exactly where they led at
    startup.  pen detaches (chdir /) and may chroot (-j), yet a path given
    later (`write rel.cfg`, `include`, `log`, ssl_* files, the -F file on
    SIGHUP) must mean what it meant on the command line: relative to the
    working directory pen was started in, absolute in the real root.

    `pin(chroot)` runs before detaching: it remembers the working directory
    and, when pen is about to chroot, keeps the real root open.  (Any other
    directory pen keeps open outside the jail -- the -F, -l, -p ones -- would
    give the same reach; this one makes every path behave the same.)
    """

    def __init__(self):
        self.cwd = None          # until pinned: the current directory
        self.rootfd = None
        self.run_as = None       # (uid, gid) that files pen creates go to (-u)
        self.dirs = {}           # directory path -> fd of an Anchored kept open


    def pin(self, chroot=False, run_as=None):
        self.cwd = os.getcwd()
        self.run_as = run_as
        if chroot and self.rootfd is None:
            self.rootfd = os.open("/", DIR_FLAGS)

    def abspath(self, path):
        return os.path.normpath(os.path.join(self.cwd or os.getcwd(), os.fspath(path)))

    def locate(self, path):
        """(dir_fd, name) for os.* calls that take dir_fd.  A directory an
        Anchored path holds open is used first: it needs no search
        permission on the directories above it (after -u)."""
        full = self.abspath(path)
        head, tail = os.path.split(full)
        if head in self.dirs and tail:
            return self.dirs[head], tail
        if full in self.dirs:
            return self.dirs[full], "."
        if self.rootfd is None:
            return None, full
        return self.rootfd, full.lstrip("/") or "."

    def open(self, path, flags, mode=0o666):
        dirfd, name = self.locate(path)
        return os.open(name, flags | os.O_CLOEXEC, mode, dir_fd=dirfd)

    def opener(self, name, flags):
        """For open(..., opener=reach.opener)."""
        return self.open(name, flags)

    @contextlib.contextmanager
    def outside(self):
        """For code that takes only path names (OpenSSL): inside the block
        the working directory is the real root, and the function yielded
        turns a path as given at startup into one that reaches it there."""
        if self.rootfd is None:
            yield self.abspath
            return
        back = os.open(".", DIR_FLAGS)
        try:
            os.fchdir(self.rootfd)
            yield lambda path: self.abspath(path).lstrip("/") or "."
        finally:
            os.fchdir(back)
            os.close(back)

    def give_away(self, fd):
        """A file pen created as root, handed to the -u user, so that pen
        can still reopen or replace it after dropping privileges."""
        if self.run_as is not None and os.geteuid() == 0:
            if os.fstat(fd).st_uid == 0:
                os.fchown(fd, *self.run_as)

    def replace(self, path, text, mode=0o644):
        """Write `text` to a temporary file beside `path`, then rename it
        over `path`: readers see the old file or the new one, never half.
        An existing file keeps its permission bits."""
        dirname, base = os.path.split(self.abspath(path))
        dfd = self.open(dirname, DIR_FLAGS)
        tmp = f".{base}.{os.getpid()}.tmp"
        try:
            try:
                mode = os.stat(base, dir_fd=dfd).st_mode & 0o7777
            except OSError:
                pass
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         mode, dir_fd=dfd)
            try:
                with open(fd, "w", encoding="utf-8", errors="surrogateescape",
                          closefd=False) as f:
                    f.write(text)
                os.fchmod(fd, mode)
                self.give_away(fd)
            finally:
                os.close(fd)
            os.replace(tmp, base, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        finally:
            os.close(dfd)


reach = Reach()


class Anchored:
    __slots__ = ("path", "dir", "name", "dirfd", "owned")

    def __init__(self, path, claim=False):
        """`claim`: the file exists and is ours (a socket we bound): unlink()
        then removes it only while it is still that same file."""
        path = reach.abspath(path)
        self.path = path
        self.dir, self.name = os.path.split(path)
        self.dirfd = reach.open(self.dir, DIR_FLAGS)
        reach.dirs.setdefault(self.dir, self.dirfd)
        self.owned = self._identity() if claim else None

    def opener(self, name, flags):
        """For open(..., opener=): relative names, and absolute ones below
        the anchored directory, are opened through the directory fd; other
        absolute ones as anchor.reach finds them."""
        if os.path.isabs(name):
            if not (name == self.path or name.startswith(self.dir + "/")):
                return reach.open(name, flags)
            name = os.path.relpath(name, self.dir)
        return os.open(name, flags | os.O_CLOEXEC, 0o666, dir_fd=self.dirfd)

    def open(self, mode="r", **kw):
        return open(self.name, mode, opener=self.opener, **kw)

    def stat(self):
        return os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)

    def _identity(self):
        """Inode numbers are reused at once; with the change time they tell
        our file from a later one of the same name."""
        st = self.stat()
        return st.st_ino, st.st_ctime_ns

    def replace_with(self, text):
        """Write atomically: a temporary file, then rename over the name."""
        tmp = f".{self.name}.{os.getpid()}.tmp"
        with open(tmp, "w", opener=self.opener) as f:
            f.write(text)
        os.replace(tmp, self.name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)

    def unlink(self):
        """Remove the file (if claimed, only while it is still ours);
        quietly, since a dropped privilege may forbid it."""
        try:
            if self.owned is None or self._identity() == self.owned:
                os.unlink(self.name, dir_fd=self.dirfd)
        except OSError:
            pass

    def close(self):
        if self.dirfd >= 0:
            if reach.dirs.get(self.dir) == self.dirfd:
                del reach.dirs[self.dir]
            os.close(self.dirfd)
            self.dirfd = -1

    def __str__(self):
        return self.path
