#!/usr/bin/env python3
"""The module graph inside each crate: fails on an import cycle, and on the
engine's `store` importing from the modules that build on it. What crosses
crates cargo checks already: the filter language (crates/filter) cannot
import livehub at all, the engine (crates/engine) cannot import the HTTP
crate (src/).

An edge is a `use crate::...` or `super::...` path outside `#[cfg(test)]`
code, resolved to the longest module it names; a module's edges to its own
parent or children are not counted (they are ownership, not use)."""

import collections
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Each crate's sources, with the modules that may not import others (by
# top-level name).
CRATES = {
    ROOT / "src": {},
    ROOT / "crates" / "engine" / "src": {
        "store": {"hub", "feed", "replay", "frame", "session", "pages", "decide", "peers"},
    },
}


def module_name(src, path):
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def main():
    failures = []
    count = 0
    for src, forbidden in CRATES.items():
        count += check(src, forbidden, failures)
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"{count} modules in {len(CRATES)} crates, no import cycle")


def check(src, forbidden, failures):
    files = [p for p in src.rglob("*.rs") if p.name not in ("main.rs", "lib.rs") or p.parent != src]
    modules = {module_name(src, p): p for p in files}

    def resolve(path):
        parts = path.split("::")
        for k in range(len(parts), 0, -1):
            candidate = "::".join(parts[:k])
            if candidate in modules:
                return candidate
        return None

    graph = collections.defaultdict(set)
    for name, path in modules.items():
        text = path.read_text().split("#[cfg(test)]")[0]
        parent = "::".join(name.split("::")[:-1])
        used = re.findall(r"crate::([a-z_]+(?:::[a-z_]+)*)", text)
        used += [f"{parent}::{m}" if parent else m for m in re.findall(r"\bsuper::([a-z_]+)", text)]
        for path_used in used:
            target = resolve(path_used)
            if not target or target == name:
                continue
            if target.startswith(name + "::") or name.startswith(target + "::"):
                continue
            graph[name].add(target)

    crate = src.relative_to(ROOT)
    for graph_of, label in ((graph, "module"), (top_level(graph), "top-level module")):
        for cycle in cycles(graph_of):
            failures.append(f"{crate}: {label} import cycle: {' -> '.join(cycle)}")
    for module, targets in graph.items():
        top = module.split("::")[0]
        for target in targets:
            if target.split("::")[0] in forbidden.get(top, ()):
                failures.append(f"{crate}: {module} imports {target}")
    return len(modules)


def top_level(graph):
    tops = collections.defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            a, b = module.split("::")[0], target.split("::")[0]
            if a != b:
                tops[a].add(b)
    return tops


def cycles(graph):
    """Every elementary cycle, each reported once (from its least module)."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    found.append(path + [start])
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


if __name__ == "__main__":
    main()
