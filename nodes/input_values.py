"""The values a MOVA node is given, checked at its boundary (plain Python; no ComfyUI import).

ComfyUI checks a typed-in widget against its range, but not NaN (every comparison with NaN is false), not a value
that arrives through a connection, and not an input that the node's own ``validate_inputs`` takes. So every MOVA
node's ``execute`` is wrapped in ``checked_inputs(spec)``: numpy scalars, 0-d tensors and other real numbers become
Python numbers, and NaN, an infinity, a bool where a number goes, a value outside the widget's range, a non-text
value where text goes or a choice the widget does not offer stop the node with a message naming the input and the
value to use, before any ``int()`` or weight sees it.
"""

from __future__ import annotations

import functools
import inspect
import numbers

from . import spec_types

CHECKED_KINDS = ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")


def plain_number(value):
    """``value`` as a Python bool / int / float when it is a numpy scalar, a 0-d array or tensor, or another real
    number (Fraction); anything else unchanged (the checks then name it)."""
    if type(value) in (bool, int, float):
        return value
    item = getattr(value, "item", None)
    if callable(item) and tuple(getattr(value, "shape", (None,))) == ():
        try:
            return plain_number(item())
        except (TypeError, ValueError, RuntimeError):
            return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _socket_problem(socket: spec_types.Socket, value) -> str | None:
    if socket.type == "BOOLEAN":
        return None if isinstance(value, bool) else f"{socket.name} must be true or false, got {value!r}"
    return spec_types.Widget(socket.name, socket.type, socket.tooltip).problem(value)


def checked_value(node: spec_types.NodeSpec, item: spec_types.Socket | spec_types.Widget, value):
    """``value`` of ``node``'s input ``item`` (numbers as plain Python numbers of the input's kind), or a ValueError
    naming the node, the input, the problem and the fix."""
    kind = item.kind if isinstance(item, spec_types.Widget) else item.type
    if kind in ("INT", "FLOAT", "BOOLEAN"):
        value = plain_number(value)
    if kind == "FLOAT" and type(value) is int:
        value = float(value)
    problem = item.problem(value) if isinstance(item, spec_types.Widget) else _socket_problem(item, value)
    if problem is not None:
        fix = item.fix() if isinstance(item, spec_types.Widget) else \
            f"connect a finite number to it ({item.tooltip.split('. ')[0].rstrip('.')})"
        raise ValueError(f"{node.display_name}: {problem}; {fix}")
    if kind == "INT":
        value = int(value)
    return value


def checked_values(node: spec_types.NodeSpec, values: dict) -> dict:
    """``values`` (input name -> value) with every number, text and choice input of ``node`` checked (numbers made
    plain Python numbers); inputs that are absent or None (optional, unconnected) are left as they are."""
    out = dict(values)
    for item in node.inputs:
        kind = item.kind if isinstance(item, spec_types.Widget) else item.type
        if kind in CHECKED_KINDS and values.get(item.name) is not None:
            out[item.name] = checked_value(node, item, values[item.name])
    return out


def checked_inputs(node: spec_types.NodeSpec):
    """Decorator for a node's ``execute`` (below ``@classmethod``): its inputs go through ``checked_values`` first."""
    def wrap(execute):
        signature = inspect.signature(execute)
        var_keyword = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)

        @functools.wraps(execute)
        def run(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            extra = bound.arguments.get(var_keyword, {}) if var_keyword else {}
            named = {k: v for k, v in bound.arguments.items() if k != var_keyword}
            checked = checked_values(node, {**named, **extra})
            for name in named:
                bound.arguments[name] = checked[name]
            if var_keyword:
                bound.arguments[var_keyword] = {name: checked[name] for name in extra}
            return execute(*bound.args, **bound.kwargs)

        run.checked_spec = node
        return run
    return wrap
