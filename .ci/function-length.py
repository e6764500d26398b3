#!/usr/bin/python3
"""Functions in `src/` longer than the limit (default 80 lines).

A function's length is the number of lines from its `fn` line to its closing brace (the line
at the `fn` line's indent that is only `}`), the closing line counted and the `fn` line not;
a one-line function is 0. The `#[cfg(test)] mod …` blocks are left out (tests may be long).
A function whose doc comment says it is a `byte-level state machine` may be longer (the
issue allows that, when the comment says so). Prints every function over the limit, longest
first, and exits 1 if there is one; `-v` prints every function over 40 lines.

    .ci/function-length.py [-v] [--limit N] [src]
"""
import os
import re
import sys

args = sys.argv[1:]
verbose = "-v" in args
limit = 80
if "--limit" in args:
    limit = int(args[args.index("--limit") + 1])
    del args[args.index("--limit") : args.index("--limit") + 2]
paths = [a for a in args if not a.startswith("-")]
root = paths[0] if paths else os.path.join(os.path.dirname(__file__), "..", "src")

FN = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
TEST_MOD = re.compile(r"^(\s*)(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
EXEMPT = "byte-level state machine"


def doc_above(lines, i):
    """The doc comment and attributes right above line i."""
    out = []
    j = i - 1
    while j >= 0 and lines[j].strip().startswith(("///", "#[")):
        out.append(lines[j])
        j -= 1
    return " ".join(l.strip().lstrip("/").strip() for l in reversed(out))


found = []
for d, _, files in sorted(os.walk(root)):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(d, f)
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        i = 0
        while i < len(lines):
            m = TEST_MOD.match(lines[i + 1]) if i + 1 < len(lines) else None
            if lines[i].strip() == "#[cfg(test)]" and m:
                end = m.group(1) + "}"
                i += 2
                while i < len(lines) and lines[i] != end:
                    i += 1
                i += 1
                continue
            m = FN.match(lines[i])
            if m and not lines[i].rstrip().endswith((";", "}")):
                end = m.group(1) + "}"
                j = i + 1
                while j < len(lines) and lines[j] != end:
                    j += 1
                found.append((j - i, os.path.relpath(path, os.path.dirname(root)), i + 1,
                              m.group(7), EXEMPT in doc_above(lines, i)))
            i += 1

over = [f for f in found if f[0] > limit and not f[4]]
for n, path, line, name, exempt in sorted(found, reverse=True):
    if n > limit or (verbose and n > 40):
        note = " (exempt: byte-level state machine)" if exempt else ""
        print(f"{n:4} {path}:{line} {name}{note}")
if over:
    print(f"{len(over)} function(s) in src/ over {limit} lines: split them into named steps")
    sys.exit(1)
print(f"function length: none over {limit} lines in {len(found)} functions")
