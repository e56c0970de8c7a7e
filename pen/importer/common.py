"""PURE helpers shared by the importers: findings and pen's quoting.

A Finding is one thing the importer tells the user about a statement it
read: `ignored` (means nothing in pen), `note` (mapped, but not quite the
same), or `unsupported` (pen cannot express it; the import exits 2 unless
--force).  Nothing read is dropped without a Finding.
"""

import shlex

IGNORED, NOTE, UNSUPPORTED = "ignored", "note", "unsupported"


class ImportSyntaxError(Exception):
    """The input cannot be read; `where` is `LINE:COL` or `argument N`."""

    def __init__(self, where, message):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


class Finding:
    __slots__ = ("where", "kind", "text")

    def __init__(self, where, kind, text):
        self.where, self.kind, self.text = where, kind, text

    def __repr__(self):
        return f"Finding({self.where!r}, {self.kind!r}, {self.text!r})"

    def line(self, source):
        return f"{source}:{self.where}: {self.kind}: {self.text}"


def quote(text):
    """A value in pen's command language (SPEC §10): always in double
    quotes, `"` and `\\` escaped.  For header rules and hook commands."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def word(text):
    """A single word of pen's command language; quoted only if it must be
    (blanks, quotes, backslashes, a leading `#`, or empty)."""
    text = str(text)
    if text and not text.startswith("#") and not any(
            c.isspace() or c in '"\\' for c in text):
        return text
    return quote(text)


def shell_line(words):
    """A command line the shell reads back as `words`."""
    return " ".join(shlex.quote(str(w)) for w in words)


def listen_address(host, port):
    """pen's LISTEN argument for a bind address (None = all) and a port."""
    if not host:
        return str(port)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
