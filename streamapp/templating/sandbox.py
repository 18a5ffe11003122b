"""The bounded sandbox: jinja2's ``ImmutableSandboxedEnvironment`` with every value-building operation checked,
Python objects kept out of the output, and what wording does not need refused at compile time."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from jinja2 import (
    Environment,
    StrictUndefined,
    Template,
    Undefined,
    nodes,
    pass_context,
    pass_eval_context,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from streamapp.templating.limits import (
    MAX_INT_BITS,
    MAX_VALUE_SIZE,
    TEXT,
    OverLimit,
    Refused,
    check_input,
    checked,
    printed_size,
    projected,
    spend,
)

# -- values a template may hold but not print ---------------------------------------------------
#: What a template may print (and a collection of it); Undefined fails on its own when printed.
_DATA = (str, int, float, type(None), list, tuple, dict, set, frozenset, Undefined)


def _kind(value: Any) -> str:
    if isinstance(value, type):
        return "a class"
    if inspect.isroutine(value) or isinstance(value, Macro):
        return "a function, method or macro"
    return f"a {type(value).__name__} object"


class _Opaque:
    """A value a template may call, read attributes of or loop over, but never print.

    Every way to text (``str``, ``repr``, ``format``, escaping) refuses, so the sandbox's
    own objects and Python's cannot leak their reprs through any filter or operator.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def refuse(self, *_: Any) -> NoReturn:
        raise Refused(f"a template prints text and numbers, not {_kind(self.value)}")

    __str__ = __repr__ = __format__ = __html__ = refuse

    def __iter__(self) -> Iterator[Any]:
        return (_guard(item) for item in self.value)

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __contains__(self, item: Any) -> bool:
        return item in self.value


def _guard(value: Any) -> Any:
    return value if isinstance(value, (*_DATA, _Opaque)) else _Opaque(value)


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, _Opaque) else value


# -- the environment ------------------------------------------------------------------------------
def _is_sequence(value: Any) -> bool:
    return isinstance(value, (str, bytes, list, tuple))


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse, before it runs, an operator that would build too big a value."""
    what = f"the {operator} operator"
    if operator == "%" and isinstance(left, TEXT):
        raise Refused("string formatting with % is not allowed in a template; join text with ~")
    if operator == "*":
        if _is_sequence(left) and isinstance(right, int):
            projected(len(left) * max(right, 0), what)
        elif _is_sequence(right) and isinstance(left, int):
            projected(len(right) * max(left, 0), what)
        elif isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise OverLimit(f"{what} would make a number of over {MAX_INT_BITS:,} bits")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = right * math.log2(abs(left))
        if bits > MAX_INT_BITS:
            raise OverLimit(f"{what} would make a number of about {bits:,.0f} bits; the limit is {MAX_INT_BITS:,}")
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        projected(len(left) + len(right), what)


def _check_method(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a text method that would build too big a value; the arguments to call it with."""
    owner = getattr(func, "__self__", None)
    if not isinstance(owner, TEXT):
        return args
    name = getattr(func, "__name__", "")
    spend(len(owner))
    if name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        projected(_replaced_size(owner, args[0], args[1], count), f"{name}()")
    elif name == "join" and args:
        items = _joined(args[0])
        projected(sum(map(printed_size, items)) + len(owner) * max(len(items) - 1, 0), f"{name}()")
        return (items, *args[1:])
    return args


def _joined(iterable: Any) -> list[Any]:
    """The items a join would print, refusing any that cannot be printed."""
    items = list(iterable)
    for item in items:
        if isinstance(item, _Opaque):
            item.refuse()
    return items


def _replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    text, old, new = str(text), str(old), str(new)
    found = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, bounded and printing data only (see the module docstring)."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            del self.globals[name]
        for name in _REFUSED_FILTERS:
            del self.filters[name]
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters |= {_GUARD: _guard, _LOOP: _loop, _CONCAT: _concat, _EMIT: _emit}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        for operand in (left, right):
            if isinstance(operand, _Opaque):
                raise Refused(f"the {operator} operator works on text and numbers, not {_kind(operand.value)}")
        _check_binop(operator, left, right)
        return checked(self.binop_table[operator](left, right), f"the {operator} operator")

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined) and attribute.startswith("_"):
            return obj  # so that using it names the missing variable, not the attribute
        return _guard(super().getattr(_unwrap(obj), attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(_unwrap(obj), argument)
        return _guard(checked(value, "a slice") if isinstance(argument, slice) else value)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # translate() and expandtabs() multiply a text by their argument's size.
        if attr in {"translate", "maketrans", "expandtabs"} and isinstance(obj, TEXT):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Called for every attribute a template reads; refuses str.format and str.format_map.
        if super().wrap_str_format(value) is not None:
            raise Refused(f"str.{value.__name__} is not allowed in a template; join text with ~")
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        func = _unwrap(obj)
        what = f"calling {getattr(func, '__name__', 'a function')}"
        for argument in (*args, *kwargs.values()):
            check_input(argument, what)
        args = _check_method(func, args, kwargs)
        return _guard(checked(super().call(context, func, *args, **kwargs), what))


# -- filters --------------------------------------------------------------------------------------
#: Filters wording may not use, and why.
_REFUSED_FILTERS = {
    "format": "string formatting is not allowed in a template; join text with ~",
    "tojson": "wording is text, not JSON",
    "urlize": "links in wording come from variables",
}


def _argument(rest: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    return rest[index] if len(rest) > index else kwargs.get(name, default)


def _check_join(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    items = _joined(value)
    separator = str(_argument(rest, kwargs, 0, "d", ""))
    projected(sum(map(printed_size, items)) + len(separator) * max(len(items) - 1, 0), "the join filter")
    return (items, *rest)


def _check_replace(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    old, new = _argument(rest, kwargs, 0, "old", ""), _argument(rest, kwargs, 1, "new", "")
    count = _argument(rest, kwargs, 2, "count", None)
    projected(_replaced_size(value, old, new, count), "the replace filter")
    return (value, *rest)


def _check_indent(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(value), _argument(rest, kwargs, 0, "width", 4)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    projected(len(text) + (text.count("\n") + 1) * pad, "the indent filter")
    return (value, *rest)


def _check_wordwrap(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(value), _argument(rest, kwargs, 0, "width", 79)
    wrapstring = str(_argument(rest, kwargs, 2, "wrapstring", None) or "\n")
    # A line ends at a space, a hyphen, a newline, or after ``width`` characters of a long word.
    lines = sum(map(text.count, " -\n")) + len(text) // max(width if isinstance(width, int) else 1, 1) + 1
    projected(len(text) + lines * len(wrapstring), "the wordwrap filter")
    return (value, *rest)


def _check_sum(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    start = _argument(rest, kwargs, 1, "start", 0)
    if not isinstance(start, int | float):  # summing lists or texts is quadratic
        raise Refused("the sum filter adds numbers")
    return (value, *rest)


_FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], tuple[Any, ...]]] = {
    "join": _check_join,
    "replace": _check_replace,
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "sum": _check_sum,
}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` with its arguments checked before it runs and its result after (keeps its
    ``pass_context``-style marker: ``functools.wraps`` copies it)."""
    check = _FILTER_CHECKS.get(name)
    what = f"the {name} filter"

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        lead = 0
        while lead < len(args) and isinstance(args[lead], Context | EvalContext | Environment):
            lead += 1
        value, rest = args[lead], args[lead + 1 :]
        if name == "attr" and isinstance(value, Undefined):
            return value  # what made it undefined (an unsafe attribute, say) is the problem to report
        check_input(value, what, sizes=False)
        for argument in (*rest, *kwargs.values()):
            check_input(argument, what)
        if check is not None:
            args = (*args[:lead], *check(value, rest, kwargs))
        return _guard(checked(func(*args, **kwargs), what))

    return bounded


# Internal filters the hardening pass inserts; their names have a space, so no template can spell them.
_GUARD, _LOOP, _CONCAT, _EMIT = "streamapp guard", "streamapp loop", "streamapp concat", "streamapp emit"


def _loop(value: Any, weight: int) -> Iterator[Any]:
    """The iterable of a ``for`` loop, each turn charged to the render's budget with ``weight``:
    one, plus the template text in the loop's body (which a macro or ``set`` block collects)."""
    for item in value:
        spend(weight, iterations=1)
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: tuple[Any, ...]) -> str:
    """``a ~ b``: bounded before it joins, escaping as jinja2's own concatenation does."""
    size = sum(map(printed_size, parts))
    projected(size, "the ~ operator")
    spend(size)
    return (markup_join if eval_ctx.autoescape else str_join)(parts)


@pass_context  # a context filter is never folded at compile time: each print is charged when it runs
def _emit(context: Context, value: Any) -> Any:
    """What ``{{ ... }}`` and template text print: data only, bounded, charged."""
    if isinstance(value, _Opaque):
        value.refuse()
    size = printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise OverLimit(f"printing a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    spend(size)
    return value


def _internal(node: nodes.Node, name: str, *args: nodes.Expr) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=node.lineno)


_LOADING_TAGS = {"Include": "include", "Import": "import", "FromImport": "from ... import", "Extends": "extends"}


class _Harden(NodeTransformer):
    """Rewrites a parsed template so that every name it reads is guarded, every ``~`` and
    ``for`` is bounded and every print is checked; refuses what wording may not do."""

    def visit_Name(self, node: nodes.Name) -> nodes.Node:
        return _internal(node, _GUARD) if node.ctx == "load" else node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _internal(nodes.Tuple(node.nodes, "load", lineno=node.lineno), _CONCAT)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        text = sum(len(data.data) for child in node.body for data in child.find_all(nodes.TemplateData))
        self.generic_visit(node)
        node.iter = _internal(node.iter, _LOOP, nodes.Const(1 + text))
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        # Template text stays as jinja2 compiles it (charged by the loop around it, if any).
        self.generic_visit(node)
        node.nodes = [c if isinstance(c, nodes.TemplateData) else _internal(c, _EMIT) for c in node.nodes]
        return node

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        if node.name in _REFUSED_FILTERS:
            raise Refused(f"the {node.name} filter: {_REFUSED_FILTERS[node.name]}", node.lineno)
        return self.generic_visit(node)

    def _refuse_loading(self, node: nodes.Node) -> NoReturn:
        tag = _LOADING_TAGS[type(node).__name__]
        raise Refused(f"{{% {tag} %}}: wording cannot load other templates", node.lineno)

    visit_Include = visit_Import = visit_FromImport = visit_Extends = _refuse_loading


_ENV = _Sandbox()


def compile_template(source: str, name: str) -> Template:
    """``source`` parsed, hardened (see :class:`_Harden`) and compiled in the bounded sandbox."""
    tree = _Harden().visit(_ENV.parse(source, name=name))
    tree.set_environment(_ENV)
    template = _ENV.from_string(tree)
    template.name = name
    template.filename = name
    return template
