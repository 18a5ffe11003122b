"""Shop-written templates: sandboxed, strict, escaped, bounded; errors name the problem and line."""

from __future__ import annotations

import pytest

from streamapp.templating import MAX_SOURCE_CHARS, TemplateError, render, render_email, render_text

VARS = {"customer_name": "Ann <script>", "order_count": 3}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("line one\n{{ missing }}", "t (line 2): unknown variable: 'missing' is undefined"),
        ("{% if %}", "t (line 1): syntax error"),
        ("{{ ''.__class__.__mro__ }}", "t (line 1): not allowed in a template"),
        ("{{ customer_name.__init__.__globals__ }}", "not allowed in a template"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "output exceeds"),
        ("x" * (MAX_SOURCE_CHARS + 1), "the limit is 65536"),
    ],
)
def test_bad_templates_are_refused_with_the_problem_and_line(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render(source, VARS, name="t")


def test_variables_are_escaped_in_html_and_plain_in_text() -> None:
    email = render_email("Hi {{ customer_name }}", "<p>{{ customer_name }}: {{ order_count }}</p>", VARS)
    assert email.html_body == "<p>Ann &lt;script&gt;: 3</p>"
    assert email.text_body == "Ann <script>: 3\n"
    assert email.subject == "Hi Ann <script>"


def test_templates_cannot_mutate_their_variables() -> None:
    items = {"names": ["a"]}
    with pytest.raises(TemplateError, match="not allowed"):
        render("{{ names.append('b') }}", items, name="t")
    assert items == {"names": ["a"]}


def test_plain_text_parts_carry_characters_not_entities() -> None:
    variables = {"customer_name": "Seán O'Brien & Co <x>"}
    assert render("{{ customer_name }}", variables, name="t") == "Seán O&#39;Brien &amp; Co &lt;x&gt;"
    assert render_text("Hi {{ customer_name }}", variables, name="t") == "Hi Seán O'Brien & Co <x>"
    with pytest.raises(TemplateError, match=r"t \(line 1\): unknown variable"):
        render_text("{{ nope }}", variables, name="t")
