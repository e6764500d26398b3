#!/usr/bin/python3
"""Import cycles between the files of the library (`src/`, without the binary's `main.rs`).

An edge a -> b is any `crate::…` or `super::…` path in a's code (a `use` line or an inline
path) that names b or an item in b; comments and the `#[cfg(test)] mod tests` at the end of a
file are left out (tests may reach anywhere). Edges to a `mod.rs` or `lib.rs`, which only
declare modules, are ignored. Prints every cycle (strongly connected set of files) with its
edges and exits 1 if there is one; `-v` also prints the whole graph.

    .ci/import-cycles.py [-v] [src]
"""
import os
import re
import sys

args = [a for a in sys.argv[1:] if not a.startswith("-")]
root = args[0] if args else os.path.join(os.path.dirname(__file__), "..", "src")

mods = {}  # module path (tuple) -> file
for d, _, files in os.walk(root):
    for f in files:
        path = os.path.join(d, f)
        if not f.endswith(".rs") or os.path.relpath(path, root) == "main.rs":
            continue
        parts = os.path.relpath(path, root)[: -len(".rs")].split(os.sep)
        if parts[-1] in ("mod", "lib"):
            parts = parts[:-1]
        mods[tuple(parts)] = path


def resolve(path):
    """The module file the longest prefix of `path` names."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None


TESTS = re.compile(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod tests\s*\{")
PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
GROUP = re.compile(r"\b(crate|super)((?:::\w+)*)::\{([^;]*?)\}\s*;")

graph = {m: set() for m in mods}
for m, path in mods.items():
    text = open(path, encoding="utf-8").read()
    found = TESTS.search(text)
    if found:
        text = text[: found.start()]
    text = re.sub(r"//[^\n]*", "", text)
    # `use super::{a, b::c}`: one path per item (nested groups: their first segment).
    for g in GROUP.finditer(text):
        for item in g.group(3).split(","):
            first = item.strip().lstrip("{").split("::")[0].split(" as ")[0].strip()
            if first and first != "self":
                text += f"\n{g.group(1)}{g.group(2)}::{first};"
            elif first == "self":
                text += f"\n{g.group(1)}{g.group(2)};"
    for p in PATH.finditer(text):
        segs = [s for s in p.group(2).split("::") if s]
        if p.group(1) == "crate":
            base = []
        else:
            base = list(m[:-1])
            while segs and segs[0] == "super":
                base, segs = base[:-1], segs[1:]
        target = resolve(base + segs)
        if target is None or target == m:
            continue
        if os.path.basename(mods[target]) in ("mod.rs", "lib.rs"):
            continue
        graph[m].add(target)

# Tarjan's strongly connected components.
index, low, stack, on_stack, sccs = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            scc.append(w)
            if w == v:
                break
        sccs.append(scc)


sys.setrecursionlimit(10000)
for v in graph:
    if v not in index:
        visit(v)


def name(m):
    return "/".join(m) or "lib"


cycles = [set(c) for c in sccs if len(c) > 1]
print(f"{len(mods)} files, {sum(len(e) for e in graph.values())} edges, {len(cycles)} cycle(s)")
for c in cycles:
    print("cycle:", ", ".join(sorted(name(x) for x in c)))
    for a in sorted(c):
        for b in sorted(graph[a] & c):
            print(f"    {name(a)} -> {name(b)}")
if "-v" in sys.argv:
    for a in sorted(graph):
        print(name(a), "->", ", ".join(sorted(name(b) for b in graph[a])))
sys.exit(1 if cycles else 0)
