#!/usr/bin/env python3
"""Prints the module graph of src/ from its own imports, file by file, and any import cycle.

Every `use` tree and every inline `crate::`/`super::` path is resolved to the file that defines
the module it names (the longest prefix that is a file: `crate::pipeline::key::DedupKey` is
`pipeline/key`). Used for docs/architecture.md: `scripts/modgraph.py [src]`. Test modules
(`tests.rs`, `*/tests/*`, and any module declared under `#[cfg(test)]` with its children, such
as the `store/model` state-machine model) are left out: they may import anything.
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "src"


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3]
    parts = rel.split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def exists(parts):
    base = os.path.join(ROOT, *parts)
    return os.path.isfile(base + ".rs") or os.path.isfile(os.path.join(base, "mod.rs"))


def resolve(parts):
    """The longest prefix of `parts` that is a module file."""
    for n in range(len(parts), 0, -1):
        if exists(parts[:n]):
            return "/".join(parts[:n])
    return None


def expand(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']"""
    tree = tree.strip()
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
    if start is None:
        return [tree]
    prefix, inner = tree[:start], tree[start + 1 : tree.rindex("}")]
    items, depth, tok = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(tok)
            tok = ""
        else:
            tok += ch
    items.append(tok)
    out = []
    for it in items:
        if it.strip():
            out += [prefix + p for p in expand(it)]
    return out


def paths_in(text, here):
    text = re.sub(r"//[^\n]*", "", text)
    found = []
    for u in re.findall(r"\buse\s+([^;]+);", text, re.S):
        found += expand(re.sub(r"\s+", "", u))
    found += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    out = set()
    for p in found:
        p = re.sub(r"\s+as\s+\w+$", "", p)
        seg = [s for s in p.split("::") if s]
        if not seg:
            continue
        if seg[0] == "crate":
            seg = seg[1:]
        elif seg[0] == "super":
            base = list(here)
            while seg and seg[0] == "super":
                base = base[:-1]
                seg = seg[1:]
            seg = base + seg
        elif seg[0] == "self":
            seg = list(here) + seg[1:]
        else:
            continue
        m = resolve(seg)
        me = "/".join(here)
        # A folder's files and its mod.rs see each other freely: the folder is one room.
        if m and m != me and not me.startswith(m + "/") and not m.startswith(me + "/"):
            out.add(m)
    return out


TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;")


def test_only():
    """Module paths declared `#[cfg(test)] mod NAME;` (file modules only)."""
    found = set()
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            here = module_of(path)
            parent = [] if here in (["lib"], ["main"]) else here
            with open(path) as fh:
                for name in TEST_MOD.findall(fh.read()):
                    found.add("/".join(parent + [name]))
    return found


def graph():
    edges = {}
    skip = test_only()
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f == "tests.rs" or "/tests" in d:
                continue
            path = os.path.join(d, f)
            here = module_of(path)
            if here in (["lib"], ["main"]):
                continue
            name = "/".join(here)
            if any(name == t or name.startswith(t + "/") for t in skip):
                continue
            with open(path) as fh:
                edges["/".join(here)] = paths_in(fh.read(), here) - {"lib", "main"}
    return edges


def cycles(edges):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    sys.setrecursionlimit(10000)
    found = cycles(edges)
    level = {}

    def lvl(v, seen=()):
        if v in level:
            return level[v]
        if v in seen:
            return 0
        level[v] = 1 + max((lvl(w, seen + (v,)) for w in edges.get(v, ())), default=-1)
        return level[v]

    for v in edges:
        lvl(v)
    for v in sorted(edges, key=lambda v: (-level[v], v)):
        deps = sorted(edges[v], key=lambda w: (-level.get(w, 0), w))
        print(f"{level[v]:2}  {v:20} -> {', '.join(deps) if deps else '(nothing)'}")
    print()
    print("cycles:", "; ".join(" <-> ".join(c) for c in found) if found else "none")


main()
