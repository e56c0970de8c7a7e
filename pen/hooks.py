"""Hooks: shell commands run when a server fails, succeeds, goes down or
comes back up (SPEC §10.2; Crossroads' onsuccess/onfailure, keepalived's
notify scripts).

    on_failure|on_success|on_down|on_up "CMD"      global
    server N on_down "CMD"                         that server's (wins)

A hook runs as `/bin/sh -c CMD`; the facts reach it only through its
environment (PEN_EVENT, PEN_SERVER, PEN_SERVER_ADDR, PEN_SERVER_PORT,
PEN_CLIENT_ADDR, PEN_REASON), never through the command text, so a client
address or a reason can never become shell code.  Nothing here blocks the
loop: the child is spawned (posix_spawn, in a session of its own so that
its whole process group can be killed), its exit is reaped by the Reactor
on SIGCHLD, its stdout and stderr come back through a pipe read on the
Reactor and go to the log (bounded).  At most `hooks_max` run at once; the
rest are counted and logged as dropped.  A hook still running after
`hook_timeout` seconds is killed with its process group.
"""

import logging
import os
import signal
import time

from .loop import EVENT_READ

log = logging.getLogger("pen")

EVENTS = ("failure", "success", "down", "up")
HOOK_WORDS = tuple(f"on_{event}" for event in EVENTS)   # command words, Server.extra keys
SHELL = "/bin/sh"
OUTPUT_MAX = 4096        # bytes of one hook's output that reach the log
LINE_MAX = 512           # characters of one logged output line
READ_SIZE = 4096
WARN_EVERY = 10.0        # seconds between "hooks dropped" warnings
ENV_PREFIX = "PEN_"


def hook_command(settings, server, event):
    """The command for this event: the server's own, else the global one,
    else None."""
    word = "on_" + event
    cmd = server.extra.get(word)
    if cmd is None:
        cmd = getattr(settings, word)
    return cmd or None


def hook_env(event, server, reason, client, base=None):
    """The child's environment: pen's own (PATH and friends) without any
    PEN_* it inherited, plus the facts of this event."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(ENV_PREFIX)}
    if isinstance(client, tuple):
        client = client[0]
    env.update({
        "PEN_EVENT": event,
        "PEN_SERVER": str(server.index),
        "PEN_SERVER_ADDR": str(server.addr),
        "PEN_SERVER_PORT": str(server.port or 0),
        "PEN_CLIENT_ADDR": "" if client is None else str(client),
        "PEN_REASON": str(reason or ""),
    })
    return env


def quote(text):
    """A value as a command word: in double quotes, `\\` and `"` escaped
    (what commands.split() undoes)."""
    out = []
    for i, c in enumerate(text):
        if c == '"':
            out.append('\\"')
        elif c == "\\" and (i + 1 == len(text) or text[i + 1] in '"\\'):
            out.append("\\\\")      # only where split() would read an escape
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


class Hook:
    """One running child: its pid, its output pipe, its deadline."""

    __slots__ = ("hooks", "pid", "name", "pipe", "output", "logged", "exited",
                 "timer", "on_output", "started")

    def __init__(self, hooks, pid, name, pipe):
        self.hooks, self.pid, self.name, self.pipe = hooks, pid, name, pipe
        self.output = b""            # an unfinished output line
        self.logged = 0              # output bytes taken so far
        self.exited = False
        self.started = time.monotonic()
        self.timer = None
        self.on_output = self._on_output

    def _on_output(self, mask):
        try:
            data = os.read(self.pipe, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._flush()
            self.hooks.reactor.unregister(self.pipe)
            os.close(self.pipe)
            self.pipe = None
            self.hooks.maybe_done(self)
            return
        room = OUTPUT_MAX - self.logged
        self.logged += len(data)
        if room <= 0:
            return                   # read and dropped, so the child never blocks
        if len(data) > room:
            data = data[:room] + b"\n[output truncated]\n"
        self.output += data
        *lines, self.output = self.output.split(b"\n")
        for line in lines:
            self._log_line(line)

    def _flush(self):
        if self.output:
            self._log_line(self.output)
            self.output = b""

    def _log_line(self, line):
        text = line.decode("utf-8", "replace").rstrip("\r")
        if len(text) > LINE_MAX:
            text = text[:LINE_MAX] + "..."
        log.warning("hook %s [%d]: %s", self.name, self.pid, text)


class Hooks:
    """The hook runner: subscribe `on_event` to state.server_events."""

    def __init__(self, state, reactor):
        self.state = state
        self.reactor = reactor
        self.running = {}            # pid -> Hook (until exited and output closed)
        self.started = self.dropped = self.killed = self.failed = 0
        self.last_warning = -WARN_EVERY

    def on_event(self, event, server, reason="", client=None):
        cmd = hook_command(self.state.settings, server, event)
        if cmd is not None:
            self.run(cmd, event, server, reason, client)

    def figures(self):
        return {"running": len(self.running), "started": self.started,
                "dropped": self.dropped, "killed": self.killed, "failed": self.failed}

    def run(self, cmd, event, server, reason="", client=None):
        st = self.state.settings
        name = f"on_{event} server {server.index}"
        if len(self.running) >= st.hooks_max:
            self.dropped += 1
            now = time.monotonic()
            if now - self.last_warning >= WARN_EVERY:
                self.last_warning = now
                log.warning("hook %s dropped: %d running (hooks_max %d); "
                            "%d dropped so far", name, len(self.running),
                            st.hooks_max, self.dropped)
            else:
                log.debug("hook %s dropped (hooks_max %d)", name, st.hooks_max)
            return None
        env = hook_env(event, server, reason, client)
        try:
            pid, pipe = spawn(cmd, env)
        except OSError as e:
            self.failed += 1
            log.error("hook %s: cannot run %s: %s", name, SHELL, e.strerror or e)
            return None
        self.started += 1
        hook = Hook(self, pid, name, pipe)
        self.running[pid] = hook
        self.reactor.register(pipe, EVENT_READ, hook.on_output)
        hook.timer = self.reactor.call_later(st.hook_timeout, self._timed_out, hook)
        self.reactor.watch_child(pid, lambda code, hook=hook: self._exited(hook, code))
        log.debug("hook %s: started pid %d", name, pid)
        return pid

    def _exited(self, hook, code):
        hook.exited = True
        if code:
            log.warning("hook %s [%d] exited with status %d", hook.name, hook.pid, code)
        else:
            log.debug("hook %s [%d] exited", hook.name, hook.pid)
        self.maybe_done(hook)

    def maybe_done(self, hook):
        """A hook is done once its shell has been reaped and every process
        holding its output has closed it; until then it counts."""
        if hook.exited and hook.pipe is None:
            if hook.timer is not None:
                hook.timer.cancel()
                hook.timer = None
            self.running.pop(hook.pid, None)

    def _timed_out(self, hook):
        hook.timer = None
        self.killed += 1
        log.warning("hook %s [%d] still running after %gs: killing its process group",
                    hook.name, hook.pid, self.state.settings.hook_timeout)
        try:
            os.killpg(hook.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if hook.pipe is not None:
            hook._flush()
            self.reactor.unregister(hook.pipe)
            os.close(hook.pipe)
            hook.pipe = None
        self.maybe_done(hook)       # the reaper frees it once the shell is gone

    def close(self):
        """pen exits: stop reading the hooks' output; they run on."""
        for hook in list(self.running.values()):
            if hook.timer is not None:
                hook.timer.cancel()
            if hook.pipe is not None:
                self.reactor.unregister(hook.pipe)
                os.close(hook.pipe)
                hook.pipe = None
        self.running.clear()


def spawn(cmd, env):
    """Start `/bin/sh -c cmd` in a new session, stdin at EOF, stdout and
    stderr into a pipe.  Returns (pid, read end of the pipe, non-blocking)."""
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    os.close(in_w)                  # the child's stdin reads EOF at once
    try:
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0),
                   (os.POSIX_SPAWN_DUP2, out_w, 1),
                   (os.POSIX_SPAWN_DUP2, out_w, 2)]
        # SIGPIPE is ignored in pen; a child must get the default back.
        pid = os.posix_spawn(SHELL, [SHELL, "-c", cmd], env, file_actions=actions,
                             setsid=True, setsigdef=(signal.SIGPIPE,), setsigmask=())
    except BaseException:
        os.close(out_r)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    os.set_blocking(out_r, False)
    return pid, out_r
