"""PURE reader of Crossroads 1.16 configuration files (manual §4.1).

    parse(text) -> [Block]      Block("service", name, ...) with .statements
                                and .backends (Blocks of kind "backend")

The language: `service NAME { ... }` blocks holding statements
`keyword argument ;` and `backend NAME { ... }` blocks.  Three comment
styles: `/* ... */`, `// ...` and `# ...` to the end of the line.  A
comment starts only where a word could (at the start of a line or after
blanks or `;{}`), so `http://host/` inside an argument stays whole.  An
argument is everything up to the `;`; single or double quotes protect a
`;` inside it; an argument that is one quoted string loses its quotes
(`"This is a string";` is `This is a string`), other quotes are kept
(`onsuccess echo 'down' | mail root;` keeps its shell quoting).

Errors are ImportSyntaxError naming LINE:COL (both from 1).
"""

import bisect
import re

from .common import ImportSyntaxError

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Statement:
    __slots__ = ("keyword", "arg", "line", "col", "arg_line", "arg_col")

    def __init__(self, keyword, arg, line, col, arg_line, arg_col):
        self.keyword, self.arg = keyword, arg
        self.line, self.col = line, col
        self.arg_line, self.arg_col = arg_line, arg_col

    @property
    def where(self):
        return f"{self.line}:{self.col}"

    @property
    def arg_where(self):
        return f"{self.arg_line}:{self.arg_col}"

    def __repr__(self):
        return f"Statement({self.keyword!r}, {self.arg!r}, {self.where})"


class Block:
    __slots__ = ("kind", "name", "line", "col", "statements", "backends")

    def __init__(self, kind, name, line, col):
        self.kind, self.name, self.line, self.col = kind, name, line, col
        self.statements, self.backends = [], []

    @property
    def where(self):
        return f"{self.line}:{self.col}"


class Reader:
    """A scanner over the text with positions as LINE:COL."""

    def __init__(self, text, keywords=()):
        self.text = text
        self.n = len(text)
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.keywords = frozenset(keywords)

    def at(self, i):
        line = bisect.bisect_right(self.starts, i)
        return line, i - self.starts[line - 1] + 1

    def where(self, i):
        line, col = self.at(i)
        return f"{line}:{col}"

    def fail(self, i, message):
        raise ImportSyntaxError(self.where(i), message)

    def boundary(self, i):
        return i == 0 or self.text[i - 1].isspace() or self.text[i - 1] in ";{}"

    def comment_end(self, i):
        """If a comment starts at i, the index just after it, else None."""
        text = self.text
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                self.fail(i, "unterminated /* comment (expected */)")
            return end + 2
        if (text.startswith("//", i) or text.startswith("#", i)) and self.boundary(i):
            end = text.find("\n", i)
            return self.n if end < 0 else end
        return None

    def skip(self, i):
        """Past blanks and comments."""
        while i < self.n:
            if self.text[i].isspace():
                i += 1
                continue
            end = self.comment_end(i)
            if end is None:
                return i
            i = end
        return i

    def ident(self, i, what):
        m = IDENT_RE.match(self.text, i)
        if not m:
            found = self.text[i:i + 1] or "end of file"
            self.fail(i, f"expected {what}, found {found!r}")
        return m.group(), m.end()

    def expect(self, i, char, what):
        i = self.skip(i)
        if i >= self.n or self.text[i] != char:
            found = self.text[i:i + 1] or "end of file"
            self.fail(i, f"expected {char!r} {what}, found {found!r}")
        return i + 1

    def argument(self, keyword, i):
        """The argument of `keyword` from i up to its `;`.  Returns
        (text, start index, index after the `;`)."""
        text = self.text
        while i < self.n and text[i] in " \t":
            i += 1
        start = i
        pieces, quoted = [], []
        while True:
            if i >= self.n:
                self.fail(start, f"{keyword}: missing ';' at end of file")
            c = text[i]
            if c == ";":
                break
            if c in "\"'":
                end = text.find(c, i + 1)
                if end < 0:
                    self.fail(i, f"{keyword}: unterminated {c} quote (expected a closing {c})")
                pieces.append(text[i:end + 1])
                quoted.append(text[i + 1:end])
                i = end + 1
                continue
            if c in "{}":
                self.fail(i, f"{keyword}: missing ';' before {c!r}")
            end = self.comment_end(i)
            if end is not None:
                pieces.append(" ")
                i = end
                continue
            if c == "\n":
                nxt = self.skip(i)
                m = IDENT_RE.match(text, nxt)
                if m and m.group() in self.keywords and m.group() != keyword:
                    self.fail(i, f"{keyword}: missing ';' at end of line")
            pieces.append(c)
            i += 1
        raw = " ".join("".join(pieces).split()) if not quoted else "".join(pieces).strip()
        if len(quoted) == 1 and raw == pieces_quoted(raw):
            raw = quoted[0]
        return raw, start, i + 1


def pieces_quoted(raw):
    """raw itself when it is exactly one quoted string, else ''."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'" and raw[0] not in raw[1:-1]:
        return raw
    return ""


def parse(text, keywords=()):
    """The service blocks of a Crossroads configuration.  `keywords` are
    the statement words (used to spot a missing `;`)."""
    r = Reader(text, keywords)
    services, seen = [], {}
    i = r.skip(0)
    while i < r.n:
        word, end = r.ident(i, "'service NAME {'")
        if word != "service":
            r.fail(i, f"expected 'service NAME {{', found {word!r} "
                      "(statements belong inside a service block)")
        block, after = _block(r, "service", end, i)
        if block.name in seen:
            r.fail(i, f"service {block.name!r} defined twice "
                      f"(first at line {seen[block.name]})")
        i = after
        seen[block.name] = block.line
        services.append(block)
        i = r.skip(i)
    return services


def _block(r, kind, i, begin):
    i = r.skip(i)
    name, i = r.ident(i, f"a {kind} name")
    line, col = r.at(begin)
    block = Block(kind, name, line, col)
    i = r.expect(i, "{", f"after {kind} {name}")
    names = {}
    while True:
        i = r.skip(i)
        if i >= r.n:
            r.fail(begin, f"{kind} {name}: missing '}}' (the block is not closed)")
        if r.text[i] == "}":
            return block, i + 1
        word, end = r.ident(i, "a statement")
        if word == "backend":
            if kind != "service":
                r.fail(i, "backend inside a backend (backends belong in a service)")
            backend, end = _block(r, "backend", end, i)
            if backend.name in names:
                r.fail(i, f"backend {backend.name!r} defined twice in service {name} "
                          f"(first at line {names[backend.name]})")
            names[backend.name] = backend.line
            block.backends.append(backend)
            i = end
            continue
        if word == "service":
            r.fail(i, f"service inside {kind} {name} (missing '}}'?)")
        arg, start, i = r.argument(word, end)
        line, col = r.at(end - len(word))
        arg_line, arg_col = r.at(start)
        block.statements.append(Statement(word, arg, line, col, arg_line, arg_col))
