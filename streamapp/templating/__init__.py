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

import html
import re
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError

from streamapp.errors import PermanentError
from streamapp.templating.limits import (
    BUDGET,
    MAX_OUTPUT_CHARS,
    MAX_RENDER_SECONDS,
    MAX_SOURCE_CHARS,
    Budget,
    OverLimit,
    Refused,
)
from streamapp.templating.sandbox import compile_template


class TemplateError(PermanentError):
    """A template does not compile or render; the message names the problem and the line."""


@dataclass(frozen=True)
class RenderedEmail:
    """An email ready for the SMTP sink."""

    subject: str
    text_body: str
    html_body: str


# -- rendering ------------------------------------------------------------------------------------
def _line_of(exc: BaseException, name: str) -> int | None:
    if isinstance(exc, TemplateSyntaxError | Refused) and exc.lineno is not None:
        return exc.lineno
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == name]
    return frames[-1].lineno if frames else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError | TemplateSyntaxError):
        return f"{'unknown variable' if isinstance(exc, UndefinedError) else 'syntax error'}: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"{'over a limit' if isinstance(exc, OverLimit) else 'not allowed in a template'}: {exc}"
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
    budget = BUDGET.set(Budget(deadline=time.thread_time() + MAX_RENDER_SECONDS))
    try:
        template = compile_template(source, name)
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
        BUDGET.reset(budget)


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
