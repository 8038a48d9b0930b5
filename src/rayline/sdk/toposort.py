"""Topological order of named nodes, and the cycles that prevent one. Pure functions."""

from __future__ import annotations

import heapq

MAX_CYCLES = 10


def toposort(upstream: dict[str, tuple[str, ...]]) -> tuple[list[str], list[list[str]]]:
    """Order nodes so that each comes after its upstream nodes (Kahn's algorithm).

    ``upstream`` maps each node to the nodes it depends on (names not in ``upstream`` are
    ignored); its insertion order breaks ties, so the result is stable. Returns the order of the
    nodes that can be ordered, and up to ``MAX_CYCLES`` cycles among the rest, each in data-flow
    order (each node feeds the next, the last feeds the first) starting at its earliest node.

    Example::

        toposort({"a": ("c",), "b": ("a",), "c": ("b",), "d": ()})
        # (['d'], [['a', 'b', 'c']])
    """
    rank = {name: i for i, name in enumerate(upstream)}
    ups = {name: tuple(u for u in dict.fromkeys(us) if u in rank) for name, us in upstream.items()}
    down: dict[str, list[str]] = {name: [] for name in ups}
    indegree = {name: len(us) for name, us in ups.items()}
    for name, us in ups.items():
        for u in us:
            down[u].append(name)
    ready = [(rank[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for d in down[name]:
            indegree[d] -= 1
            if indegree[d] == 0:
                heapq.heappush(ready, (rank[d], d))
    left = set(ups) - set(order)
    return order, (_cycles(ups, left, rank) if left else [])


def _cycles(
    ups: dict[str, tuple[str, ...]], left: set[str], rank: dict[str, int]
) -> list[list[str]]:
    found: list[list[str]] = []
    while len(found) < MAX_CYCLES:
        left = _on_or_behind_cycles(left, ups)
        if not left:
            break
        # Every node left has an upstream node left, so walking upstream must repeat a node.
        path, seen = [min(left, key=rank.__getitem__)], {}
        while path[-1] not in seen:
            seen[path[-1]] = len(path) - 1
            path.append(min((u for u in ups[path[-1]] if u in left), key=rank.__getitem__))
        cycle = list(reversed(path[seen[path[-1]] : -1]))  # walked upstream: reverse it
        first = min(range(len(cycle)), key=lambda i: rank[cycle[i]])
        found.append(cycle[first:] + cycle[:first])
        left = left - set(cycle)
    return found


def _on_or_behind_cycles(left: set[str], ups: dict[str, tuple[str, ...]]) -> set[str]:
    """Drop, Kahn-style, the nodes with no upstream node left: no cycle runs through them."""
    count = {n: sum(u in left for u in ups[n]) for n in left}
    down: dict[str, list[str]] = {n: [] for n in left}
    for n in left:
        for u in ups[n]:
            if u in left:
                down[u].append(n)
    queue = [n for n, c in count.items() if c == 0]
    kept = set(left)
    while queue:
        n = queue.pop()
        kept.discard(n)
        for d in down[n]:
            count[d] -= 1
            if count[d] == 0:
                queue.append(d)
    return kept
