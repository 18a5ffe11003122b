"""Rendering of shop-written templates, in jinja2's sandbox only, within bounds.

Every template renders in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``
and autoescaping: a template cannot reach Python internals, cannot mutate its variables,
fails loudly on an unknown variable, and cannot inject markup through a variable's value.
The sandbox alone leaves three holes, closed here:

* **Resources.** jinja2 bounds ``range`` and nothing else: ``'a' * 10**9``,
  ``10**(10**10)`` (which jinja2 would even compute while compiling), a macro that calls
  itself twice, or nested loops that print nothing allocate gigabytes or never end. Every
  operation that builds a value (the arithmetic operators, ``~``, filters, calls, slices,
  printing) is checked *before* it runs against :data:`MAX_VALUE_SIZE` and
  :data:`MAX_INT_BITS`, and one render has a budget: :data:`MAX_WORK`,
  :data:`MAX_LOOP_ITERATIONS` and :data:`MAX_RENDER_SECONDS`. Output is capped while it streams.
* **Python objects.** A template prints text and numbers only. Functions, methods,
  classes, macros, ``loop`` and ``self`` can be called, read or looped over, not printed
  (not even through ``|string``, ``~`` or ``|join``), so no ``<built-in method ... at 0x...>``
  or ``<class ...>`` ever reaches a customer.
* **What wording does not need**: string formatting (``%``, ``|format``, ``str.format``,
  whose width specifiers allocate and whose fields reach attributes), loading other
  templates (``include``, ``import``, ``extends``), ``tojson``, ``urlize``, and the
  ``lipsum``, ``cycler``, ``joiner`` and ``namespace`` globals are refused.

Saving wording validates it with :func:`render`, and every render (worker, sinks, preview)
goes through :func:`render` too, so what was accepted when saved is bounded when sent.
"""

from __future__ import annotations

import functools
import html
import inspect
import math
import re
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn

from jinja2 import (
    Environment,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
    pass_context,
    pass_eval_context,
)
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from streamapp.errors import PermanentError

MAX_SOURCE_CHARS = 65_536
MAX_OUTPUT_CHARS = 262_144
#: Longest value (characters when printed, items of a collection) one operation may build.
MAX_VALUE_SIZE = MAX_OUTPUT_CHARS
#: Largest integer a template may compute, in bits (about 308 digits: wording counts money).
MAX_INT_BITS = 1024
#: Work one render may do in all: characters it builds, prints or inspects, plus one per step.
MAX_WORK = 10_000_000
#: Loop turns one render may run, all loops together.
MAX_LOOP_ITERATIONS = 1_000_000
#: CPU time one render may take (this thread's, so other load does not count): the backstop
#: for work the budget cannot count (a comparison of two long strings inside a loop, say).
MAX_RENDER_SECONDS = 2.0


class TemplateError(PermanentError):
    """A template does not compile or render; the message names the problem and the line."""


@dataclass(frozen=True)
class RenderedEmail:
    """An email ready for the SMTP sink."""

    subject: str
    text_body: str
    html_body: str


class _Refused(SecurityError):
    """Something shop wording may not do; ``lineno`` when it is known before the template runs."""

    def __init__(self, message: str, lineno: int | None = None) -> None:
        super().__init__(message)
        self.lineno = lineno


class _OverLimit(SecurityError):
    """An operation, or the render as a whole, would go over one of the limits."""


# -- the budget of one render ---------------------------------------------------------------------
@dataclass
class _Budget:
    deadline: float
    work: int = 0
    iterations: int = 0
    charges: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("streamapp_template_budget", default=None)


def _spend(work: int, iterations: int = 0) -> None:
    """Charge the current render; _OverLimit once it has done too much."""
    budget = _BUDGET.get()
    if budget is None:  # not inside render(): only the per-operation limits apply
        return
    budget.work += work
    budget.iterations += iterations
    if budget.work > MAX_WORK:
        raise _OverLimit(f"the template does more than {MAX_WORK:,} units of work (characters built, steps)")
    if budget.iterations > MAX_LOOP_ITERATIONS:
        raise _OverLimit(f"loops run more than {MAX_LOOP_ITERATIONS:,} times")
    budget.charges += 1
    # Reading the CPU clock costs a system call: every 256 charges is often enough.
    if not budget.charges % 256 and time.thread_time() > budget.deadline:
        raise _OverLimit(f"rendering takes more than {MAX_RENDER_SECONDS:g} seconds of CPU time")


_TEXT = (str, bytes)
_COLLECTIONS = (list, tuple, set, frozenset, dict)


def _printed_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """About how many characters printing ``value`` makes (items for a collection: at least
    one each); stops counting past ``limit``. 0 for what cannot be printed at all."""
    if isinstance(value, _TEXT):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 24
    if isinstance(value, _COLLECTIONS):
        total = 2
        for item in value.items() if isinstance(value, dict) else value:
            total += _printed_size(item, limit - total) + 2
            if total > limit:
                break
        return total
    return 0


def _checked(value: Any, what: str) -> Any:
    """``value``, which ``what`` made, once it is within the limits; its size is charged."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise _OverLimit(f"{what} makes a number of {value.bit_length():,} bits; the limit is {MAX_INT_BITS:,}")
    size = _printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise _OverLimit(f"{what} makes a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    _spend(1 + size)
    return value


def _projected(size: int, what: str) -> None:
    """Refuse, before it runs, an operation that would build ``size`` characters or items."""
    if size > MAX_VALUE_SIZE:
        raise _OverLimit(f"{what} would make {size:,} characters or items; the limit is {MAX_VALUE_SIZE:,}")


def _check_input(value: Any, what: str, *, sizes: bool = True) -> None:
    """What a call or filter gets is within the limits; with ``sizes``, a number (which may
    size what it builds: a width, a count) is at most MAX_VALUE_SIZE. Its size is charged."""
    if sizes and isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_VALUE_SIZE:
        raise _OverLimit(f"{what} gets a number over {MAX_VALUE_SIZE:,}")
    size = _printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise _OverLimit(f"{what} gets a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    _spend(1 + size)


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
        raise _Refused(f"a template prints text and numbers, not {_kind(self.value)}")

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
    if operator == "%" and isinstance(left, _TEXT):
        raise _Refused("string formatting with % is not allowed in a template; join text with ~")
    if operator == "*":
        if _is_sequence(left) and isinstance(right, int):
            _projected(len(left) * max(right, 0), what)
        elif _is_sequence(right) and isinstance(left, int):
            _projected(len(right) * max(left, 0), what)
        elif isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _OverLimit(f"{what} would make a number of over {MAX_INT_BITS:,} bits")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        bits = right * math.log2(abs(left))
        if bits > MAX_INT_BITS:
            raise _OverLimit(f"{what} would make a number of about {bits:,.0f} bits; the limit is {MAX_INT_BITS:,}")
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        _projected(len(left) + len(right), what)


def _check_method(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a text method that would build too big a value; the arguments to call it with."""
    owner = getattr(func, "__self__", None)
    if not isinstance(owner, _TEXT):
        return args
    name = getattr(func, "__name__", "")
    _spend(len(owner))
    if name == "replace" and len(args) >= 2:
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _projected(_replaced_size(owner, args[0], args[1], count), f"{name}()")
    elif name == "join" and args:
        items = _joined(args[0])
        _projected(sum(map(_printed_size, items)) + len(owner) * max(len(items) - 1, 0), f"{name}()")
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
                raise _Refused(f"the {operator} operator works on text and numbers, not {_kind(operand.value)}")
        _check_binop(operator, left, right)
        return _checked(self.binop_table[operator](left, right), f"the {operator} operator")

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined) and attribute.startswith("_"):
            return obj  # so that using it names the missing variable, not the attribute
        return _guard(super().getattr(_unwrap(obj), attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(_unwrap(obj), argument)
        return _guard(_checked(value, "a slice") if isinstance(argument, slice) else value)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # translate() and expandtabs() multiply a text by their argument's size.
        if attr in {"translate", "maketrans", "expandtabs"} and isinstance(obj, _TEXT):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Called for every attribute a template reads; refuses str.format and str.format_map.
        if super().wrap_str_format(value) is not None:
            raise _Refused(f"str.{value.__name__} is not allowed in a template; join text with ~")
        return None

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        func = _unwrap(obj)
        what = f"calling {getattr(func, '__name__', 'a function')}"
        for argument in (*args, *kwargs.values()):
            _check_input(argument, what)
        args = _check_method(func, args, kwargs)
        return _guard(_checked(super().call(context, func, *args, **kwargs), what))


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
    _projected(sum(map(_printed_size, items)) + len(separator) * max(len(items) - 1, 0), "the join filter")
    return (items, *rest)


def _check_replace(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    old, new = _argument(rest, kwargs, 0, "old", ""), _argument(rest, kwargs, 1, "new", "")
    count = _argument(rest, kwargs, 2, "count", None)
    _projected(_replaced_size(value, old, new, count), "the replace filter")
    return (value, *rest)


def _check_indent(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(value), _argument(rest, kwargs, 0, "width", 4)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _projected(len(text) + (text.count("\n") + 1) * pad, "the indent filter")
    return (value, *rest)


def _check_wordwrap(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    text, width = str(value), _argument(rest, kwargs, 0, "width", 79)
    wrapstring = str(_argument(rest, kwargs, 2, "wrapstring", None) or "\n")
    # A line ends at a space, a hyphen, a newline, or after ``width`` characters of a long word.
    lines = sum(map(text.count, " -\n")) + len(text) // max(width if isinstance(width, int) else 1, 1) + 1
    _projected(len(text) + lines * len(wrapstring), "the wordwrap filter")
    return (value, *rest)


def _check_sum(value: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    start = _argument(rest, kwargs, 1, "start", 0)
    if not isinstance(start, int | float):  # summing lists or texts is quadratic
        raise _Refused("the sum filter adds numbers")
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
        _check_input(value, what, sizes=False)
        for argument in (*rest, *kwargs.values()):
            _check_input(argument, what)
        if check is not None:
            args = (*args[:lead], *check(value, rest, kwargs))
        return _guard(_checked(func(*args, **kwargs), what))

    return bounded


# Internal filters the hardening pass inserts; their names have a space, so no template can spell them.
_GUARD, _LOOP, _CONCAT, _EMIT = "streamapp guard", "streamapp loop", "streamapp concat", "streamapp emit"


def _loop(value: Any, weight: int) -> Iterator[Any]:
    """The iterable of a ``for`` loop, each turn charged to the render's budget with ``weight``:
    one, plus the template text in the loop's body (which a macro or ``set`` block collects)."""
    for item in value:
        _spend(weight, iterations=1)
        yield item


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: tuple[Any, ...]) -> str:
    """``a ~ b``: bounded before it joins, escaping as jinja2's own concatenation does."""
    size = sum(map(_printed_size, parts))
    _projected(size, "the ~ operator")
    _spend(size)
    return (markup_join if eval_ctx.autoescape else str_join)(parts)


@pass_context  # a context filter is never folded at compile time: each print is charged when it runs
def _emit(context: Context, value: Any) -> Any:
    """What ``{{ ... }}`` and template text print: data only, bounded, charged."""
    if isinstance(value, _Opaque):
        value.refuse()
    size = _printed_size(value)
    if size > MAX_VALUE_SIZE:
        raise _OverLimit(f"printing a value of {size:,} characters; the limit is {MAX_VALUE_SIZE:,}")
    _spend(size)
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
            raise _Refused(f"the {node.name} filter: {_REFUSED_FILTERS[node.name]}", node.lineno)
        return self.generic_visit(node)

    def _refuse_loading(self, node: nodes.Node) -> NoReturn:
        tag = _LOADING_TAGS[type(node).__name__]
        raise _Refused(f"{{% {tag} %}}: wording cannot load other templates", node.lineno)

    visit_Include = visit_Import = visit_FromImport = visit_Extends = _refuse_loading


_ENV = _Sandbox()


def _compile(source: str, name: str) -> Template:
    """``source`` parsed, hardened (see :class:`_Harden`) and compiled in the bounded sandbox."""
    tree = _Harden().visit(_ENV.parse(source, name=name))
    tree.set_environment(_ENV)
    template = _ENV.from_string(tree)
    template.name = name
    template.filename = name
    return template


# -- rendering ------------------------------------------------------------------------------------
def _line_of(exc: BaseException, name: str) -> int | None:
    if isinstance(exc, TemplateSyntaxError | _Refused) and exc.lineno is not None:
        return exc.lineno
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == name]
    return frames[-1].lineno if frames else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError | TemplateSyntaxError):
        return f"{'unknown variable' if isinstance(exc, UndefinedError) else 'syntax error'}: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"{'over a limit' if isinstance(exc, _OverLimit) else 'not allowed in a template'}: {exc}"
    if isinstance(exc, RecursionError):
        return "nests or recurses too deeply"
    if isinstance(exc, SyntaxError):  # Python refusing the compiled template: blocks nested too deeply
        return f"nests too deeply ({exc.msg})"
    return f"{type(exc).__name__}: {exc}"


_FAILURES = (
    JinjaTemplateError,
    TypeError,
    ValueError,
    ArithmeticError,
    AttributeError,
    LookupError,
    RecursionError,
    SyntaxError,
)


def render(source: str, variables: Mapping[str, Any], *, name: str) -> str:
    """Render ``source`` (HTML-escaped output). Raises TemplateError naming the problem and line."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"{name}: template is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    budget = _BUDGET.set(_Budget(deadline=time.thread_time() + MAX_RENDER_SECONDS))
    try:
        template = _compile(source, name)
        parts: list[str] = []
        size = 0
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"{name}: output exceeds {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
        return "".join(parts)
    except TemplateError:
        raise
    except _FAILURES as exc:
        line = _line_of(exc, name)
        where = f" (line {line})" if line is not None else ""
        raise TemplateError(f"{name}{where}: {_describe(exc)}") from None
    finally:
        _BUDGET.reset(budget)


def render_text(source: str, variables: Mapping[str, Any], *, name: str) -> str:
    """Render a plain-text part (SMS, notification text, a text body): same sandbox and
    autoescaping as :func:`render`, then entities turned back into characters, so that
    ``O'Brien`` reads ``O'Brien`` and not ``O&#39;Brien``. Never use the result as HTML."""
    return html.unescape(render(source, variables, name=name))


def html_to_text(markup: str) -> str:
    """A plain-text rendition of simple HTML email markup (linear time: a tag never holds ``<``)."""
    text = re.sub(r"(?i)<br\s*/?>", "\n", markup)
    text = re.sub(r"(?i)</p\s*>", "\n\n", text)
    text = re.sub(r"<[^<>]*>", "", text)
    text = html.unescape(text)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def render_email(subject: str, body: str, variables: Mapping[str, Any]) -> RenderedEmail:
    """Subject and body of an email template: HTML body, plain-text body, one-line subject."""
    rendered_subject = render_text(subject, variables, name="subject")
    html_body = render(body, variables, name="body")
    return RenderedEmail(
        subject=" ".join(rendered_subject.split()),
        text_body=html_to_text(html_body),
        html_body=html_body,
    )
