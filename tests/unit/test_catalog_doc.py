"""The variables document: committed equals generated, complete, per trigger; the terminal text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamapp.errors import ConfigurationError
from streamapp.rules import variables_doc
from streamapp.rules.catalog import ART_APPROVAL_SENT, BY_KEY, RULES, CatalogRule
from streamapp.rules.variables_doc import main, variables_markdown, variables_text

DOC = variables_markdown()


def sections(doc: str) -> dict[str, str]:
    """Anchor id -> the text of its section, up to the next anchor."""
    parts = re.split(r'<a id="([^"]+)"></a>', doc)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def variables_table(section: str) -> list[str]:
    """The rows of a section's variables table."""
    table = section.split("| Variable | Description | Example |\n| --- | --- | --- |\n", 1)[1]
    return [line for line in table.splitlines() if line.startswith("| ")]


def rule_rows() -> dict[str, list[str]]:
    """Rule key -> the cells of its row in the rules table."""
    table = DOC.split("## Rules", 1)[1].split("## Triggers", 1)[0]
    rows = [line.removeprefix("| ").removesuffix(" |").split(" | ") for line in table.splitlines()]
    return {cells[0].strip("`"): cells for cells in rows if cells[0].startswith("`")}


def section_of(rule: CatalogRule) -> str:
    """The section the rules table links ``rule``'s trigger to."""
    anchor = re.search(r"\]\(#([^)]+)\)$", rule_rows()[rule.key][2])
    assert anchor is not None, rule.key
    return sections(DOC)[anchor.group(1)]


def test_committed_document_is_the_generated_one() -> None:
    committed = variables_doc.OUT.read_text(encoding="utf-8") if variables_doc.OUT.exists() else ""
    assert committed == DOC, "docs/variables.md is stale; regenerate it with `python -m streamapp.rules.variables_doc`"
    assert main(["--check"]) == 0


def test_check_reports_a_stale_file_and_writing_fixes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "docs" / "variables.md"
    monkeypatch.setattr(variables_doc, "OUT", out)

    assert main(["--check"]) == 1
    assert "run python -m streamapp.rules.variables_doc" in capsys.readouterr().err
    assert main([]) == 0
    assert out.read_text(encoding="utf-8") == DOC
    assert main(["--check"]) == 0
    out.write_text(DOC.replace("Ann Lee", "Ann Smith"), encoding="utf-8")
    assert main(["--check"]) == 1


def test_output_is_deterministic() -> None:
    assert variables_markdown() == DOC
    assert variables_text() == variables_text()


def test_rules_table_has_every_rule_with_channel_and_default() -> None:
    rows = rule_rows()
    assert list(rows) == [rule.key for rule in RULES]
    for rule in RULES:
        _, channel, _, default, description = rows[rule.key]
        assert (channel, default, description) == (
            rule.channel,
            "on" if rule.on_by_default else "off",
            rule.description,
        )


def test_every_rule_links_to_the_section_of_its_trigger_with_its_variables() -> None:
    for rule in RULES:
        section = section_of(rule)
        assert f"`{rule.key}` ({rule.channel}, " in section.split("Used by:", 1)[1], rule.key
        assert f"Trigger key `{rule.trigger.key}`" in section
        assert variables_table(section) == [
            f"| `{v.name}` | {v.description} | `{v.example}` |" for v in rule.trigger.variables
        ], rule.key
    # One section per distinct trigger, each with its own anchor, and every section used.
    anchors = list(sections(DOC))
    assert len(anchors) == len(set(anchors)) == len({rule.trigger for rule in RULES}) == 18
    assert {section_of(rule) for rule in RULES} == set(sections(DOC).values())


def test_triggers_sharing_a_key_get_separate_sections() -> None:
    invoice_sent = section_of(BY_KEY["invoice_sent_email"])
    payment_link = section_of(BY_KEY["payment_link_email"])
    assert invoice_sent != payment_link
    assert section_of(BY_KEY["invoice_sent_sms"]) == invoice_sent
    assert "`payment_link`" in payment_link and "`payment_link`" not in invoice_sent
    assert "`payment_link_email`" in payment_link and "`payment_link_email`" not in invoice_sent
    for text in (invoice_sent, payment_link):
        assert "Other sections with this key" in text
    assert "Needs the shop's Stripe integration" in payment_link
    assert "Needs the shop's Stripe integration" not in invoice_sent

    approval = section_of(BY_KEY["art_approval_email"])
    assert '### `job.status_changed` → "Art Approval Sent"' in approval
    assert 'only when the job moves to "Art Approval Sent"' in approval
    assert "`review_link`" in approval and "`art_approval_sms`" in approval
    any_status = section_of(BY_KEY["status_change_toast"])
    assert "### `job.status_changed` (any status)" in any_status
    assert "on every status change" in any_status
    assert "`review_link`" not in any_status and "`status_update_sms`" in any_status
    # Same variables as "any status", still its own section: the rules differ.
    in_production = section_of(BY_KEY["production_started_email"])
    assert variables_table(in_production) == variables_table(any_status) and in_production != any_status


def test_scheduled_triggers_say_so() -> None:
    assert "scheduled: it fires from the passing of time" in section_of(BY_KEY["invoice_60day_escalation"])
    assert "scheduled" not in section_of(BY_KEY["invoice_paid_email"])


def test_variables_text_for_one_rule() -> None:
    text = variables_text("art_approval_email")
    lines = text.splitlines()
    assert lines[0] == "art_approval_email  (email, on by default)"
    assert lines[2] == '  trigger: job.status_changed → "Art Approval Sent": A job moved to "Art Approval Sent"'
    assert lines[4].split() == ["NAME", "DESCRIPTION", "EXAMPLE"]
    variables = lines[5:]
    assert [line.split()[0] for line in variables] == [v.name for v in ART_APPROVAL_SENT.variables]
    review = variables[-1]
    assert "Link to review and approve the artwork" in review and review.endswith("https://acme.example/art/J-1042")

    sms = variables_text("invoice_sent_sms")
    assert "(sms, off by default)" in sms and "payment_link" not in sms


def test_variables_text_for_every_trigger() -> None:
    text = variables_text()
    for rule in RULES:
        assert f"{rule.key} ({rule.channel})" in text
    assert text.count("\n  rules: ") == 18


@pytest.mark.parametrize(
    ("key", "suggested"),
    [
        ("art_aproval_email", "art_approval_email"),
        ("toast", "status_change_toast"),
        ("Status_Update_SMS", "status_update_sms"),
    ],
)
def test_unknown_rule_suggests_close_keys(key: str, suggested: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^no catalog rule '{key}'; did you mean .*{suggested}"):
        variables_text(key)


def test_unknown_rule_without_a_close_match_lists_every_rule() -> None:
    with pytest.raises(ConfigurationError) as raised:
        variables_text("xyzzy")
    message = str(raised.value)
    assert "\n" not in message
    assert all(key in message for key in BY_KEY)
