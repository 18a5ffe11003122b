"""The catalogue's triggers and template variables, as a document.

``python -m streamapp.rules.variables_doc [--check]``

Writes ``docs/variables.md`` from :mod:`streamapp.rules.catalog`; with ``--check`` writes
nothing and exits 1 if the committed file differs, so the document template writers
read can never drift from the data the engine validates templates against.

Sections are per :class:`~streamapp.rules.catalog.Trigger` *object* (event key, ``to_status``,
description and variables), not per event key: ``invoice.sent`` fires two rules that
receive different variables, and ``job.status_changed`` has one trigger for any status
and one per status it moves to, each with its own variables. Grouping by key alone
would promise a variable to a rule that never gets it.

Output is deterministic: sections sorted by event key, then "any status" before named
statuses, then by the order of the catalogue; no dates or environment in the text.
:func:`variables_text` is the same information as plain text for a terminal.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamapp.errors import ConfigurationError
from streamapp.rules.catalog import BY_KEY, RULES, CatalogRule, Trigger

OUT = Path(__file__).resolve().parents[2] / "docs" / "variables.md"
TITLE = "Automation triggers and template variables"
REGENERATE = "python -m streamapp.rules.variables_doc"


@dataclass(frozen=True)
class _Section:
    """One trigger, the rules it fires (catalogue order) and its document anchor."""

    trigger: Trigger
    rules: tuple[CatalogRule, ...]
    anchor: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _label(trigger: Trigger, code: bool = False) -> str:
    """``job.status_changed → "In Production"``, ``job.status_changed (any status)``, ``invoice.sent``.

    ``code``: the event key as Markdown inline code.
    """
    key = _code(trigger.key) if code else trigger.key
    if trigger.to_status is not None:
        return f'{key} → "{trigger.to_status}"'
    if any(rule.trigger.key == trigger.key and rule.trigger.to_status is not None for rule in RULES):
        return f"{key} (any status)"
    return key


def _ambiguous(trigger: Trigger) -> bool:
    """True when another trigger has the same key and status (``invoice.sent``): the label alone is not enough."""
    same = {
        rule.trigger for rule in RULES if (rule.trigger.key, rule.trigger.to_status) == (trigger.key, trigger.to_status)
    }
    return len(same) > 1


def _heading(trigger: Trigger, code: bool = False) -> str:
    """:func:`_label`, followed by the description when the label is :func:`_ambiguous`."""
    label = _label(trigger, code)
    return f"{label}: {trigger.description}" if _ambiguous(trigger) else label


def _sections() -> list[_Section]:
    """The distinct triggers of the catalogue, each with its rules, in document order."""
    rules_of: dict[Trigger, list[CatalogRule]] = {}
    for rule in RULES:
        rules_of.setdefault(rule.trigger, []).append(rule)
    first_seen = {trigger: index for index, trigger in enumerate(rules_of)}
    ordered = sorted(rules_of, key=lambda t: (t.key, t.to_status is not None, t.to_status or "", first_seen[t]))
    # An anchor from key and status, unless two triggers share both (invoice.sent): then
    # the first rule's key tells them apart, stable however the catalogue is reordered.
    base = {trigger: _slug(f"{trigger.key} {trigger.to_status or ''}") for trigger in ordered}
    shared = {slug for slug in base.values() if list(base.values()).count(slug) > 1}
    sections = []
    for trigger in ordered:
        anchor = base[trigger]
        if anchor in shared:
            anchor = f"{anchor}-{_slug(rules_of[trigger][0].key)}"
        sections.append(_Section(trigger, tuple(rules_of[trigger]), f"trigger-{anchor}"))
    return sections


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Inline code, with enough backticks around it for any backticks inside."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") else text
    return f"{fence}{padded}{fence}"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _state(rule: CatalogRule) -> str:
    return "on" if rule.on_by_default else "off"


def _and(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def variables_markdown() -> str:
    """The Markdown document: every rule in one table, then one section per trigger with its variables."""
    sections = _sections()
    anchor_of = {section.trigger: section.anchor for section in sections}
    keys = [section.trigger.key for section in sections]
    shared = sorted({key for key in keys if keys.count(key) > 1})
    lines = [
        f"# {TITLE}",
        "",
        f"<!-- Generated from streamapp/rules/catalog.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        f"The print-shop catalogue has {len(RULES)} automatic rules, fired by {len(sections)} triggers. "
        "A rule's templates may use exactly the variables of its trigger; the examples are the "
        "values that previews and template validation use.",
        "",
        "A trigger is an event type and, for job status changes, the status the job moves to. "
        "The sections below are per trigger, not per event type",
    ]
    if shared:
        lines[-1] += (
            f": {_and([_code(key) for key in shared])} each have more than one section, and a rule "
            "receives the variables of its own section only."
        )
    else:
        lines[-1] += "."
    lines += [
        "",
        "## Rules",
        "",
        _row(["Rule", "Channel", "Trigger", "Default", "Description"]),
        _row(["---"] * 5),
    ]
    for rule in RULES:
        trigger = f"[{_cell(_heading(rule.trigger, code=True))}](#{anchor_of[rule.trigger]})"
        lines.append(_row([_code(rule.key), rule.channel, trigger, _state(rule), _cell(rule.description)]))
    lines += ["", "## Triggers"]
    for section in sections:
        lines += ["", f'<a id="{section.anchor}"></a>', "", *_section_markdown(section, sections)]
    return "\n".join(lines) + "\n"


def _section_markdown(section: _Section, sections: Sequence[_Section]) -> list[str]:
    trigger = section.trigger
    lines = [f"### {_heading(trigger, code=True)}", ""]
    if not _ambiguous(trigger):  # else the heading carries the description
        lines += [_sentence(trigger.description), ""]
    used_by = ", ".join(f"{_code(rule.key)} ({rule.channel}, {_state(rule)} by default)" for rule in section.rules)
    lines += [_scope_note(section, sections), "", f"Used by: {used_by}.", ""]
    lines += [_row(["Variable", "Description", "Example"]), _row(["---"] * 3)]
    lines += [_row([_code(v.name), _cell(v.description), _code(v.example)]) for v in trigger.variables]
    return lines


def _scope_note(section: _Section, sections: Sequence[_Section]) -> str:
    """When the trigger fires, what it needs, and which other sections share its key."""
    trigger = section.trigger
    siblings = [s for s in sections if s.trigger.key == trigger.key and s is not section]
    when = f"Trigger key {_code(trigger.key)}"
    if trigger.scheduled:
        when += ", scheduled: it fires from the passing of time, not from an event"
    if trigger.to_status is not None:
        when += f', only when the job moves to "{trigger.to_status}"'
    elif any(s.trigger.to_status is not None for s in siblings):
        when += ", on every status change, whatever status the job moves to"
    notes = [f"{when}."]
    if trigger.needs is not None:
        notes.append(f"Needs the shop's {trigger.needs.capitalize()} integration.")
    if siblings:
        others = _and([f"[{_cell(_heading(s.trigger, code=True))}](#{s.anchor})" for s in siblings])
        notes.append(
            f"Other sections with this key: {others}; a rule's templates get its own section's variables only."
        )
    return " ".join(notes)


def _trigger_line(trigger: Trigger) -> str:
    """The trigger in one line of plain text, with what is special about it."""
    extras = [*(["scheduled"] if trigger.scheduled else []), *([f"needs {trigger.needs}"] if trigger.needs else [])]
    return f"{_label(trigger)}: {trigger.description}" + (f" ({', '.join(extras)})" if extras else "")


# -- plain text, for the terminal --------------------------------------------------------------
def _columns(rows: Sequence[Sequence[str]], indent: str) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _variables_block(trigger: Trigger) -> list[str]:
    rows = [("NAME", "DESCRIPTION", "EXAMPLE"), *((v.name, v.description, v.example) for v in trigger.variables)]
    return _columns(rows, "    ")


def _unknown(rule_key: str) -> ConfigurationError:
    """The error of an unknown rule key, naming the keys it was probably meant to be."""
    keys = sorted(BY_KEY)
    # Substrings first ("toast", "sms"), then difflib for typos ("art_aproval_email").
    matches = [key for key in keys if rule_key.lower() in key] or difflib.get_close_matches(rule_key, keys, n=5)
    if matches:
        return ConfigurationError(f"no catalog rule {rule_key!r}; did you mean {', '.join(matches[:5])}?")
    return ConfigurationError(f"no catalog rule {rule_key!r}; the rules are {', '.join(keys)}")


def variables_text(rule_key: str | None = None) -> str:
    """Plain text for ``streamapp catalog variables [--rule KEY]``: one rule's variables, or every trigger's.

    An unknown ``rule_key`` is a ConfigurationError listing the closest keys.
    """
    if rule_key is not None:
        rule = BY_KEY.get(rule_key)
        if rule is None:
            raise _unknown(rule_key)
        lines = [
            f"{rule.key}  ({rule.channel}, {_state(rule)} by default)",
            f"  {rule.description}",
            f"  trigger: {_trigger_line(rule.trigger)}",
            "  variables:",
            *_variables_block(rule.trigger),
        ]
        return "\n".join(lines) + "\n"
    blocks = []
    for section in _sections():
        used_by = ", ".join(f"{rule.key} ({rule.channel})" for rule in section.rules)
        blocks.append(
            "\n".join(
                [
                    _trigger_line(section.trigger),
                    f"  rules: {used_by}",
                    "  variables:",
                    *_variables_block(section.trigger),
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


def main(argv: list[str]) -> int:
    """Write the document, or with ``--check`` exit 1 if the committed one differs."""
    text = variables_markdown()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"stale {OUT.parent.name}/{OUT.name}; run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
