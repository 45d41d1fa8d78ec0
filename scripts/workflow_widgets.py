"""A node's widgets as ComfyUI's frontend lays them out, and the values a UI-format workflow stores for them.

Plain Python (standard library only); used by scripts/workflow_api.py. The frontend builds a node's widgets from the
server's ``/object_info``, input by input in ``input_order``: one widget per input of a widget type (unless it is
``forceInput``), followed by a ``control_after_generate`` choice where the input asks for one and an upload button for
``*_upload`` inputs. A V3 DynamicCombo (``COMFY_DYNAMICCOMBO_V3``, e.g. Save Video's ``format`` in ComfyUI v0.33) is a
combo whose choice inserts the inputs of that option right after it, named ``<combo>.<input>`` and nested the same
way; the API prompt carries them under those dotted names. An Autogrow input (``COMFY_AUTOGROW_V3``) adds sockets
``<input>.<name>`` as links are made, and a MatchType input is one socket.

A workflow stores the values in ``widgets_values`` (a list, in widget order: the frontend reads it position by
position, each choice of a DynamicCombo laying out the widgets that follow) and, from frontend 1.49 on, in
``widgets_values_named`` too (widget name -> value). Values are read by name where names are stored (names survive a
core node gaining a widget in the middle), else by position as the frontend reads them; a widget without a stored
value gets its default, as the frontend gives it. Values that fit no widget, or that are not of the widget's kind,
are refused with the node and the widget named.
"""

from __future__ import annotations

from dataclasses import dataclass

# Input types the frontend (1.27 .. 1.49) draws as widgets; each takes one entry in widgets_values.
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "MARKDOWN", "TEXTAREA", "COLOR", "COLORS", "CURVE",
                "RANGE", "BOUNDING_BOX", "BOUNDING_BOXES", "IMAGECOMPARE", "COMPOSITOR", "PAINTER", "CHART",
                "GALLERIA", "VIDEO_EDIT", "IMAGEUPLOAD"}
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
KIND_WORDS = {"INT": "a whole number", "FLOAT": "a number", "BOOLEAN": "true or false", "STRING": "a text",
              "TEXTAREA": "a text", "MARKDOWN": "a text", "COMBO": "a choice", DYNAMIC_COMBO: "a choice"}
CONTROL = "control_after_generate"  # the frontend's name of the seed's follow-up choice
UPLOAD = "upload"                   # and of an upload button
MISSING = object()


class WidgetError(ValueError):
    """A node's stored widget values do not fit its widgets; the message names the node and the widget."""


def combo_options(kind, options: dict | None = None) -> list | None:
    """The choices of a combo input: V1 lists them as the type (older ComfyUI sends only that, without an options
    dict), V3 as ("COMBO", {"options": [...]}); a DynamicCombo's are its options' keys."""
    options = options or {}
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options", []))
    if kind == DYNAMIC_COMBO:
        return [option["key"] for option in options.get("options", [])]
    return None


def widget_kind(kind, options: dict) -> str | None:
    """The widget type the frontend draws for an input (COMBO for a list of choices), or None for a socket only."""
    if options.get("forceInput"):
        return None
    if isinstance(kind, list):
        return "COMBO"
    kind = options.get("widgetType") or kind
    return kind if kind in WIDGET_TYPES or kind == DYNAMIC_COMBO else None


def _followers(options: dict) -> list[str]:
    """The frontend's widgets after an input's own: the seed's control choice, the upload button."""
    found = [CONTROL] if options.get("control_after_generate") else []
    return found + [UPLOAD for key, value in options.items() if key.endswith("_upload") and value]


def _inputs(inputs: dict, order: dict | None):
    """(name, type, options) of a node's (or a DynamicCombo option's) inputs, required first, in the frontend's
    order (``input_order`` where the server gives it)."""
    for section in ("required", "optional"):
        entries = inputs.get(section) or {}
        for name in (order or {}).get(section, list(entries)):
            kind, *rest = entries[name]
            yield name, kind, (rest[0] if rest else {}) or {}


@dataclass
class Widget:
    """One widget of a node as laid out: its dotted name (``format.codec`` inside Save Video's ``format``), its
    kind, the input's options, and the value it holds."""

    name: str
    kind: str
    options: dict
    value: object = MISSING
    choices: list | None = None


def _default(widget: Widget):
    """The value the frontend gives a new widget: the input's default, else a combo's first choice."""
    if "default" in widget.options:
        return widget.options["default"]
    return widget.choices[0] if widget.choices else MISSING


def _fits(kind: str, value) -> bool:
    """Whether a stored value can be the value of a widget of this kind (a shifted list puts a text into a
    number)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "INT":
        return number and float(value).is_integer()
    if kind == "FLOAT":
        return number
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind in ("STRING", "TEXTAREA", "MARKDOWN"):
        return isinstance(value, str)
    if kind in ("COMBO", DYNAMIC_COMBO):
        return value is None or isinstance(value, (str, int, float, bool))
    return True


class StoredValues:
    """A node's stored widget values, handed out in the order the frontend lays the widgets out."""

    def __init__(self, node: dict, label: str):
        self.label = label
        raw = node.get("widgets_values")
        named = node.get("widgets_values_named")
        if isinstance(raw, dict):
            raise WidgetError(f"{label}: widgets_values is a mapping ({_listing(raw)}); ComfyUI's frontend stores a "
                              "list in widget order: open the workflow in ComfyUI and save it again")
        if raw is not None and not isinstance(raw, list):
            raise WidgetError(f"{label}: widgets_values is {type(raw).__name__}, not a list of widget values: open "
                              "the workflow in ComfyUI and save it again")
        if named is not None and not isinstance(named, dict):
            raise WidgetError(f"{label}: widgets_values_named is {type(named).__name__}, not a mapping of widget "
                              "names to values: remove it or save the workflow again in ComfyUI")
        self.values = list(raw or [])
        self.named = dict(named) if named else None
        self.position = 0
        self.used: set[str] = set()

    def take(self, name: str):
        """The value stored for the widget ``name`` (the next one in order), or MISSING."""
        if self.named is not None:
            self.used.add(name)
            return self.named.get(name, MISSING)
        if self.position >= len(self.values):
            return MISSING
        self.position += 1
        return self.values[self.position - 1]

    def finish(self, widgets: list[Widget]) -> None:
        """Refuse values that no widget took."""
        laid_out = ", ".join(w.name for w in widgets) or "none"
        if self.named is not None:
            left = [name for name in self.named if name not in self.used]
            if left:
                raise WidgetError(f"{self.label}: the workflow stores a value for {_listing(left)}, which this node "
                                  f"does not have on this ComfyUI (its widgets: {laid_out}): the workflow was saved "
                                  "with another version of the node; open it in ComfyUI, check the node and save it")
            return
        left = self.values[self.position:]
        if any(value is not None for value in left):  # the frontend leaves null for widgets it does not save
            raise WidgetError(f"{self.label}: {len(left)} widget value(s) more than the node's widgets "
                              f"({laid_out}): {_listing(left)}; the workflow was saved with another version of the "
                              "node or was edited by hand: open it in ComfyUI, check the node and save it")


def _listing(items) -> str:
    shown = [repr(item) for item in list(items)[:6]]
    return ", ".join(shown) + (", ..." if len(items) > 6 else "")


def lay_out(info: dict, stored: StoredValues) -> list[Widget]:
    """The node's widgets with their values (stored, else the default), in the frontend's order; DynamicCombos
    expanded by the option their value chooses."""
    widgets: list[Widget] = []
    _lay_out(info.get("input", {}), info.get("input_order"), "", stored, widgets)
    stored.finish([w for w in widgets if w.kind not in (CONTROL, UPLOAD)])
    return widgets


def _lay_out(inputs: dict, order: dict | None, prefix: str, stored: StoredValues, widgets: list[Widget]) -> None:
    for name, kind, options in _inputs(inputs, order):
        drawn = widget_kind(kind, options)
        if drawn is None:
            continue
        widget = Widget(prefix + name, drawn, options, choices=combo_options(kind, options))
        value = stored.take(widget.name)
        widget.value = _default(widget) if value is MISSING else value
        if value is not MISSING and not _fits(drawn, value):
            raise WidgetError(f"{stored.label}: widget {widget.name} ({drawn}) holds {value!r}, not "
                              f"{KIND_WORDS.get(drawn, 'a value of its kind')}: the stored values are shifted (a "
                              "value too many or too few before it) or were edited by hand; open the workflow in "
                              "ComfyUI, check the node and save it")
        widgets.append(widget)
        for follower in _followers(options):
            widgets.append(Widget(follower, follower, {}, stored.take(follower)))
        if drawn == DYNAMIC_COMBO:
            chosen = [o for o in options.get("options", []) if o.get("key") == widget.value]
            if not chosen:
                keys = ", ".join(repr(k) for k in widget.choices)
                raise WidgetError(f"{stored.label}: widget {widget.name} is {widget.value!r}, not one of {keys}: "
                                  "choose one in ComfyUI and save the workflow")
            _lay_out(chosen[0].get("inputs", {}), None, widget.name + ".", stored, widgets)


def prompt_widgets(info: dict, inputs: dict) -> list[Widget]:
    """The widgets of an API prompt node (``inputs`` by dotted name), DynamicCombos followed by the option their
    value in ``inputs`` chooses; each with the value ``inputs`` gives it (MISSING where it gives none)."""
    found: list[Widget] = []

    def walk(section_inputs: dict, order: dict | None, prefix: str) -> None:
        for name, kind, options in _inputs(section_inputs, order):
            drawn = widget_kind(kind, options)
            if drawn is None:
                continue
            widget = Widget(prefix + name, drawn, options, inputs.get(prefix + name, MISSING),
                            combo_options(kind, options))
            found.append(widget)
            if drawn == DYNAMIC_COMBO:
                for option in options.get("options", []):
                    if option.get("key") == widget.value:
                        walk(option.get("inputs", {}), None, widget.name + ".")

    walk(info.get("input", {}), info.get("input_order"), "")
    return found
