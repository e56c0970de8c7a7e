"""Anchored: a file path that stays reachable after chroot and chdir.

pen opens some files again long after startup: the -F file on SIGHUP,
the -l log on rotation, the -w page on SIGUSR1, and on exit it removes
its pid file and Unix sockets.  After `-j` (chroot) those paths no longer
exist, and after detaching (chdir /) relative paths point elsewhere.  An
Anchored path holds its directory open from startup and works relative
to that directory fd, so all of these keep working.
"""

import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Anchored:
    __slots__ = ("path", "dir", "name", "dirfd", "owned")

    def __init__(self, path, claim=False):
        """`claim`: the file exists and is ours (a socket we bound): unlink()
        then removes it only while it is still that same file."""
        path = os.path.abspath(path)
        self.path = path
        self.dir, self.name = os.path.split(path)
        self.dirfd = os.open(self.dir, DIR_FLAGS)
        self.owned = self._identity() if claim else None

    def opener(self, name, flags):
        """For open(..., opener=): relative names, and absolute ones below
        the anchored directory, are opened through the directory fd."""
        if os.path.isabs(name) and (name == self.path or name.startswith(self.dir + "/")):
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
            os.close(self.dirfd)
            self.dirfd = -1

    def __str__(self):
        return self.path
