"""The effects of commands: what commands.apply cannot do itself because
it touches file descriptors, carried out in order by the App
(App.run_effects).  PURE: small named types, no behaviour.

Each is a tuple `(name, *args)` underneath, so `Close(7) == ("close", 7)`
and the executor and the tests read them either way.
"""


class Effect(tuple):
    """One effect: build it with its arguments, `Close(7)`."""

    __slots__ = ()
    name = "effect"

    def __new__(cls, *args):
        return tuple.__new__(cls, (cls.name, *args))

    @property
    def args(self):
        return self[1:]

    def __repr__(self):
        return f"{type(self).__name__}{self.args!r}"


def _effect(class_name, name, doc):
    return type(class_name, (Effect,), {"__slots__": (), "name": name, "__doc__": doc})


Listen = _effect("Listen", "listen", "Listen(ListenAddr): re-bind the client listener; "
                 "the old one stays if the new one cannot be bound.")
Exit = _effect("Exit", "exit", "Exit(): stop the daemon (only with -X).")
Close = _effect("Close", "close", "Close(conn_id): close that connection.")
Log = _effect("Log", "log", "Log(target or None[, previous]): (re)open the -l log, or "
              "stop logging; if the target cannot be opened, logging stays as it was "
              "(the setting back to `previous`).")
Write = _effect("Write", "write", "Write(path[, text]): write text (the -w page), or the "
                "running configuration (`write`), through a temporary file and a rename.")
Include = _effect("Include", "include", "Include(path): run that file's lines "
                  "(config.run_lines does it at once).")
Debug = _effect("Debug", "debug", "Debug(level): set the logging level.")
ConnMax = _effect("ConnMax", "conn_max", "ConnMax(n): conn_max changed: resume accepting "
                  "if the listener rested at the old limit.")
Source = _effect("Source", "source", "Source(ip or None): bind upstream connects to this IP.")
Tls = _effect("Tls", "tls", "Tls(): an ssl_* setting changed: rebuild the TLS context.")
SslInfo = _effect("SslInfo", "ssl_info", "SslInfo(): reply with the certificates in use.")
Admin = _effect("Admin", "admin", "Admin(ListenAddr or None): open or close the admin page.")
Dumps = _effect("Dumps", "dumps", "Dumps(): open and close the traffic dump files.")
Stages = _effect("Stages", "stages", "Stages(): the pre-dispatch stages to run changed.")
Idlers = _effect("Idlers", "idlers", "Idlers(): `idlers N` changed: open or close "
                 "idle server connections to match (pen/idlers.py).")
DeferAccept = _effect("DeferAccept", "defer_accept", "DeferAccept(seconds): set "
                      "TCP_DEFER_ACCEPT on the client listener (0: off).")
Shutdown = _effect("Shutdown", "shutdown", "Shutdown(seconds): stop accepting and drain.")
