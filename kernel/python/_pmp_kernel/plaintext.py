"""The display formatter's answer for builtin scalars, without asking it.

IPython's DisplayFormatter asks twelve formatters about every value a cell
leaves; for an int, a float, a str or a bool only text/plain answers, with
the value's repr (its pretty printer for these types is `_repr_pprint`, and
the float one `float_format % value`). `PlainText(formatter)(value)` gives
that text when it can prove IPython would give exactly it and nothing else:
the formatters are IPython's own classes, none of them has a printer
registered for the value, its type or a base (by type, by name or for that
very object), and the text/plain printer IPython would pick is the stock
one. Otherwise it returns None and IPython's formatter runs as usual."""

from IPython.core import formatters
from IPython.lib import pretty

# Exact types only: a subclass may define _repr_html_ and friends.
SCALARS = frozenset({int, float, str, bool})

# IPython's classes for the formatters it creates; a formatter of another
# class may answer anything.
STOCK_CLASSES = frozenset(
    {
        formatters.IPythonDisplayFormatter,
        formatters.MimeBundleFormatter,
        formatters.PlainTextFormatter,
        formatters.HTMLFormatter,
        formatters.MarkdownFormatter,
        formatters.SVGFormatter,
        formatters.PNGFormatter,
        formatters.PDFFormatter,
        formatters.JPEGFormatter,
        formatters.LatexFormatter,
        formatters.JSONFormatter,
        formatters.JavascriptFormatter,
    }
)


def _trait(obj, name):
    # Read straight from traitlets' value store: its descriptor costs more
    # than everything else here. Missing only before the first read.
    try:
        return obj._trait_values[name]
    except (AttributeError, KeyError):
        return getattr(obj, name)


def _deferred_keys(cls):
    """(module, name) of each class in `cls.__mro__`, as the formatters'
    deferred_printers are keyed; the same for every value of a type."""
    keys = _DEFERRED_KEYS.get(cls)
    if keys is None:
        keys = _DEFERRED_KEYS[cls] = tuple((c.__module__, c.__name__) for c in cls.__mro__)
    return keys


# Only SCALARS are ever looked up: a handful of entries.
_DEFERRED_KEYS = {}


def _lookup_tables(formatter):
    """enabled, singleton_printers, type_printers, deferred_printers: read
    together, from traitlets' value store when all four are there."""
    values = formatter._trait_values
    try:
        return (
            values["enabled"],
            values["singleton_printers"],
            values["type_printers"],
            values["deferred_printers"],
        )
    except KeyError:
        return (
            formatter.enabled,
            formatter.singleton_printers,
            formatter.type_printers,
            formatter.deferred_printers,
        )


def _registered(tables, value, mro, keys):
    """Whether a formatter with these tables has a printer for `value` (as
    BaseFormatter.lookup would find it)."""
    _, singletons, type_printers, deferred = tables
    if id(value) in singletons:
        return True
    # Loops, not any(): a generator costs more than these few lookups.
    if type_printers:
        for cls in mro:
            if cls in type_printers:
                return True
    if deferred:
        for key in keys:
            if key in deferred:
                return True
    return False


class PlainText:
    def __init__(self, formatter):
        self.formatter = formatter
        plain = formatter.formatters.get("text/plain")
        # The float printer PlainTextFormatter installed (it reads
        # float_format, which %precision sets).
        self._float_printer = None
        if type(plain) is formatters.PlainTextFormatter:
            self._float_printer = plain.type_printers.get(float)

    def __call__(self, value):
        cls = type(value)
        if cls not in SCALARS:
            return None
        display = self.formatter
        if type(display) is not formatters.DisplayFormatter or "format" in vars(display):
            return None
        table = _trait(display, "formatters")
        plain = table.get("text/plain")
        if type(plain) is not formatters.PlainTextFormatter or not _trait(plain, "enabled"):
            return None
        mro = cls.__mro__
        keys = _deferred_keys(cls)
        others = [
            _trait(display, "ipython_display_formatter"),
            _trait(display, "mimebundle_formatter"),
        ]
        others.extend(f for key, f in table.items() if key != "text/plain")
        for other in others:
            if type(other) not in STOCK_CLASSES:
                return None
            tables = _lookup_tables(other)
            if tables[0] and _registered(tables, value, mro, keys):
                return None
        return self._text(plain, value, mro)

    def _text(self, plain, value, mro):
        try:
            if not _trait(plain, "pprint"):
                return repr(value)
            # The printer RepresentationPrinter.pretty would pick.
            printer = _trait(plain, "singleton_printers").get(id(value))
            if printer is None:
                type_printers = _trait(plain, "type_printers")
                deferred = _trait(plain, "deferred_printers")
                for cls in mro:
                    printer = type_printers.get(cls)
                    if printer is not None:
                        break
                    if (cls.__module__, cls.__name__) in deferred:
                        return None
            if printer is pretty._repr_pprint:
                text = repr(value)
                # _repr_pprint breaks the lines of a multi-line repr.
                return text if len(text.splitlines()) == 1 else None
            if printer is not None and printer is self._float_printer and mro[0] is float:
                text = _trait(plain, "float_format") % value
                return text if len(text.splitlines()) == 1 else None
        except Exception:  # noqa: BLE001 - IPython's formatter catches all too
            # Let IPython's formatter report it (e.g. an int too long to print).
            return None
        return None
