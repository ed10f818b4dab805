"""Which tensors a process trains, and their names: the leaves a backward pass reaches (its
trainable parameters, whoever updates them) and each parameter's name in the module that holds it.
Standard library plus the torch the process imported.
"""

from __future__ import annotations

import gc
from typing import Any


def parameter_names(torch, params: list) -> tuple[list[str], str | None]:
    """Each parameter's name in the module that holds it (`transformer.h.0.attn.c_attn.weight`), found
    by walking the live nn.Modules: the root is the module no other module holds. Parameters no module
    holds get "" (the caller names them)."""
    names, _, _, root = owners(torch, params)
    return names, root


def owners(torch, params: list) -> tuple[list[str], list[tuple[Any, str] | None], list[tuple[int, int, int]], str | None]:
    """Each parameter's full name, its holder (module, attribute name) or None, its place in its root
    module's parameters() (for the model's own order), and the root modules' class names. One walk of
    the live objects (gc): called when unseen tensors appear, not per step."""
    wanted = {id(p) for p in params}
    held: dict[int, list[tuple[int, str]]] = {}  # id(param) -> [(id(module), local name)]: tied weights have several
    parent: dict[int, tuple[int, str]] = {}  # id(module) -> (id(parent), child name)
    modules: dict[int, Any] = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.nn.Module):  # type(), not isinstance: no __class__ of a lazy module proxy
            modules[id(obj)] = obj
            for name, p in obj._parameters.items():
                if p is not None and id(p) in wanted:
                    held.setdefault(id(p), []).append((id(obj), name))
            for name, child in obj._modules.items():
                if child is not None:
                    parent.setdefault(id(child), (id(obj), name))

    def full(module: int, name: str) -> tuple[str, int, int, str]:
        parts, seen, holder = [name], set(), module
        while module in parent and module not in seen:
            seen.add(module)
            module, child = parent[module]
            parts.append(child)
        return ".".join(reversed(parts)), module, holder, name

    names, holders, places, roots = [], [], [], set()
    order: dict[int, dict[int, int]] = {}  # id(root) -> id(param) -> its index in root.parameters()
    for p in params:
        candidates = sorted(full(module, name) for module, name in held.get(id(p), []))
        if not candidates:  # held by no module
            names.append("")
            holders.append(None)
            places.append((1, 0, 0))  # after every held parameter
            continue
        name, root, holder, attribute = candidates[0]  # the first name in sorted order: the same in every run
        if root not in order:
            order[root] = {id(q): i for i, q in enumerate(modules[root].parameters())}
        roots.add(type(modules[root]).__name__)
        names.append(name)
        holders.append((modules[holder], attribute))
        places.append((0, list(order).index(root), order[root].get(id(p), 0)))
    return names, holders, places, ", ".join(sorted(roots)) or None


def leaves(tensors: list) -> list:
    """The leaf tensors a backward from `tensors` reaches (the variables of its AccumulateGrad nodes),
    in the order of a depth-first walk of the autograd graph: deterministic for the same graph."""
    found, seen = [], {}  # id -> node: holding each node keeps its id from being reused by another
    stack = []
    for t in tensors:
        fn = getattr(t, "grad_fn", None)
        if fn is not None:
            stack.append(fn)
        elif getattr(t, "requires_grad", False):
            found.append(t)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        variable = getattr(node, "variable", None)
        if variable is not None:
            found.append(variable)
            continue
        for child, _ in reversed(node.next_functions):
            if child is not None and id(child) not in seen:
                stack.append(child)
    unique, ids = [], set()
    for t in found:
        if id(t) not in ids:
            ids.add(id(t))
            unique.append(t)
    return unique


class Trainable:
    """The tensors a process trains outside an optimizer's sight: the nn.Parameters its backward
    passes reach (a non-Parameter leaf joins when it persists from one backward to the next, so an
    input that requires grad is not a parameter; in a model of plain tensors, every leaf), each
    held by its (module, attribute): a parameter swapped for a new tensor (`module.w =
    Parameter(...)`, `p.data = ...`) stays the same named parameter."""

    def __init__(self, torch):
        self.torch = torch
        self.entries: list[tuple[str, tuple[Any, str] | None, Any]] = []  # (name, holder, tensor), in model order
        self.places: list[tuple[int, int, int, int]] = []
        self.keys: set = set()
        self.previous: set[int] = set()  # ids of the last backward's non-Parameter leaves
        self.root: str | None = None

    def tensors(self) -> list:
        out = []
        for _, holder, tensor in self.entries:
            out.append(holder[0]._parameters.get(holder[1]) if holder is not None else tensor)
        return out

    def names(self) -> list[str]:
        return [name for name, _, _ in self.entries]

    def update(self, roots: list) -> bool:
        """Take in the leaves of a backward from `roots`; True when the set changed."""
        found = leaves(roots)
        parameter = self.torch.nn.Parameter
        params = [t for t in found if isinstance(t, parameter)]
        plain = [t for t in found if not isinstance(t, parameter)]
        keep = plain if not params and not self.entries else [t for t in plain if id(t) in self.previous]
        self.previous = {id(t) for t in plain}
        current = {id(t) for t in self.tensors() if t is not None}
        new = [t for t in params + keep if id(t) not in current]
        if not new:
            return False
        names, holders, places, root = owners(self.torch, new)
        self.root = self.root or root
        rows = list(zip(self.places, self.entries))
        for t, name, holder, place in zip(new, names, holders, places):
            key = (id(holder[0]), holder[1]) if holder is not None else id(t)
            if key in self.keys:  # a swapped parameter: the same named one
                continue
            self.keys.add(key)
            rows.append(((*place, len(rows)), (name or f"leaf{len(rows)}", holder, t if holder is None else None)))
        if len(rows) == len(self.entries):
            return False
        rows.sort(key=lambda r: r[0])  # the model's own order (root by root, parameters() order); plain leaves last
        self.places, self.entries = [r[0] for r in rows], [r[1] for r in rows]
        return True
