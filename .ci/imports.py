#!/usr/bin/env python3
"""The module graph of src/: fails on an import cycle, and on `store`
importing from the modules that build on it. (The filter language is a crate
of its own, crates/filter, so it cannot import livehub at all.)

An edge is a `use crate::...` or `super::...` path outside `#[cfg(test)]`
code, resolved to the longest module it names; a module's edges to its own
parent or children are not counted (they are ownership, not use)."""

import collections
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
# Modules these may not import (by top-level name).
FORBIDDEN = {
    "store": {"routes", "hub", "feed", "session", "error"},
}


def module_name(path):
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return "::".join(parts)


def main():
    files = [p for p in SRC.rglob("*.rs") if p.name not in ("main.rs", "lib.rs") or p.parent != SRC]
    modules = {module_name(p): p for p in files}

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

    failures = []
    for graph_of, label in ((graph, "module"), (top_level(graph), "top-level module")):
        for cycle in cycles(graph_of):
            failures.append(f"{label} import cycle: {' -> '.join(cycle)}")
    for module, targets in graph.items():
        top = module.split("::")[0]
        for target in targets:
            if target.split("::")[0] in FORBIDDEN.get(top, ()):
                failures.append(f"{module} imports {target}")
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"{len(modules)} modules, no import cycle")


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
