"""Rendering of shop-written templates, in jinja2's sandbox only.

Every template renders in an ``ImmutableSandboxedEnvironment`` with
``StrictUndefined`` and autoescaping: a template cannot reach Python internals,
cannot mutate its variables, fails loudly on an unknown variable, and cannot
inject markup through a variable's value. Output is capped while it streams.
"""

from __future__ import annotations

import html
import re
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from streamapp.errors import PermanentError

MAX_SOURCE_CHARS = 65_536
MAX_OUTPUT_CHARS = 262_144

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)


class TemplateError(PermanentError):
    """A template does not compile or render; the message names the problem and the line."""


@dataclass(frozen=True)
class RenderedEmail:
    """An email ready for the SMTP sink."""

    subject: str
    text_body: str
    html_body: str


def _line_of(exc: BaseException, name: str) -> int | None:
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == name]
    return frames[-1].lineno if frames else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UndefinedError):
        return f"unknown variable: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"not allowed in a template: {exc}"
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def render(source: str, variables: Mapping[str, Any], *, name: str) -> str:
    """Render ``source`` (HTML-escaped output). Raises TemplateError naming the problem and line."""
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"{name}: template is {len(source)} characters; the limit is {MAX_SOURCE_CHARS}")
    try:
        template = _ENV.from_string(source)
        template.name = name
        template.filename = name
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
    except (JinjaTemplateError, TypeError, ValueError, ArithmeticError, AttributeError, KeyError) as exc:
        line = _line_of(exc, name)
        where = f" (line {line})" if line is not None else ""
        raise TemplateError(f"{name}{where}: {_describe(exc)}") from None


def render_text(source: str, variables: Mapping[str, Any], *, name: str) -> str:
    """Render a plain-text part (SMS, notification text, a text body): same sandbox and
    autoescaping as :func:`render`, then entities turned back into characters, so that
    ``O'Brien`` reads ``O'Brien`` and not ``O&#39;Brien``. Never use the result as HTML."""
    return html.unescape(render(source, variables, name=name))


def html_to_text(markup: str) -> str:
    """A plain-text rendition of simple HTML email markup."""
    text = re.sub(r"(?i)<br\s*/?>", "\n", markup)
    text = re.sub(r"(?i)</p\s*>", "\n\n", text)
    text = re.sub(r"<[^>]*>", "", text)
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
