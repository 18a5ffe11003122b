"""The admin commands through the real entry point (``streamapp.cli.main.main``, each in its own process)
on the real broker and database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from tests.harness.cli import Cli

pytestmark = pytest.mark.integration

SHOP = "shop-1"
BODY = "<p>Hi {{ customer_name }},</p>\n<p>{{ order_count }} orders at {{ shop_name }}: thank you!</p>\n"


def sql(cli: Cli, query: str, *args: object) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(cli.env["DATABASE_URL"])
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()

    asyncio.run(run())


def test_email_rule_needs_an_existing_template_then_lists(cli: Cli) -> None:
    add = ("rules", "add-order-count", "--shop", SHOP, "--name", "Thanks at 3", "--orders", "3", "--action", "email")
    assert cli.refused(*add, "--template", "thanks") == (
        "streamapp: error: shop shop-1 has no email template thanks (add it with `templates add`)"
    )
    assert cli.add_template("thanks", BODY).returncode == 0
    rule_id = cli.ok(*add, "--template", "thanks").strip()
    assert len(rule_id) == 12

    table = cli.ok("rules", "list", "--shop", SHOP).splitlines()
    assert table[0].split()[:5] == ["ID", "NAME", "ORDERS", "ACTION", "DETAIL"]
    assert table[1].startswith(rule_id) and "Thanks at 3" in table[1] and " thanks " in table[1]
    assert " on " in table[1]
    assert "thanks" in cli.ok("templates", "list", "--shop", SHOP)
    assert cli.ok("templates", "show", "--shop", SHOP, "--key", "thanks").endswith(BODY)


def test_disable_enable_round_trip(cli: Cli) -> None:
    rule_id = cli.ok(
        "rules", "add-order-count", "--shop", SHOP, "--name", "Alert at 5", "--orders", "5", "--action", "alert"
    ).strip()
    [created] = cli.rules_json()
    assert created["enabled"] is True

    assert cli.ok("rules", "disable", "--shop", SHOP, rule_id).startswith(f"rule {rule_id} disabled")
    [disabled] = cli.rules_json()
    assert disabled["enabled"] is False
    assert disabled["effective_at"] == created["effective_at"]
    assert "already disabled" in cli.ok("rules", "disable", "--shop", SHOP, rule_id)

    cli.ok("rules", "enable", "--shop", SHOP, rule_id)
    [enabled] = cli.rules_json()
    assert enabled["enabled"] is True
    effective = datetime.fromisoformat(str(enabled["effective_at"]))
    assert effective > datetime.fromisoformat(str(created["effective_at"]))
    assert enabled["updated_at"] == enabled["effective_at"]
    assert "already enabled" in cli.ok("rules", "enable", "--shop", SHOP, rule_id)
    assert cli.rules_json() == [enabled]


def test_unknown_rule_id_is_one_line(cli: Cli) -> None:
    assert cli.refused("rules", "enable", "--shop", SHOP, "nosuchrule") == (
        "streamapp: error: shop shop-1 has no rule nosuchrule"
    )
    assert "--shop 'a:b'" in cli.refused("rules", "list", "--shop", "a:b")


def test_template_errors_name_the_problem_and_line(cli: Cli) -> None:
    done = cli.add_template("broken", "<p>Hello</p>\n<p>{{ nope }}</p>\n")
    assert done.returncode == 2
    assert "line 2" in done.stderr and "nope" in done.stderr, done.stderr
    sandbox = cli.add_template("escape", "<p>{{ ''.__class__ }}</p>\n")
    assert sandbox.returncode == 2 and "template refused" in sandbox.stderr, sandbox.stderr
    missing = cli("templates", "add", "--shop", SHOP, "--key", "k", "--subject", "s", "--body-file", "/nonexistent/b")
    assert missing.returncode == 2
    assert missing.stderr == "streamapp: error: --body-file /nonexistent/b: No such file or directory\n"
    assert "has no email templates" in cli.ok("templates", "list", "--shop", SHOP)


def test_credit_amounts_and_option_combinations(cli: Cli) -> None:
    credit = ("rules", "add-order-count", "--shop", SHOP, "--name", "Credit at 10", "--orders", "10")
    assert "more than 2 decimal places" in cli.refused(*credit, "--action", "credit", "--amount", "20.505")
    assert "must be more than zero" in cli.refused(*credit, "--action", "credit", "--amount", "0")
    assert "not a number" in cli.refused(*credit, "--action", "credit", "--amount", "lots")
    assert cli.refused(*credit, "--action", "credit") == "streamapp: error: a credit rule needs --amount DOLLARS"
    assert cli.refused(*credit, "--action", "alert", "--template", "thanks") == (
        "streamapp: error: --template is only for email rules, not alert"
    )
    cli.ok(*credit, "--action", "credit", "--amount", "20.50", "--disabled")
    [rule] = cli.rules_json()
    assert rule["amount_cents"] == 2050 and rule["enabled"] is False
    row = cli.ok("rules", "list", "--shop", SHOP).splitlines()[1]
    assert "$20.50" in row and " off " in row


def test_shop_profile(cli: Cli) -> None:
    assert (
        cli.ok("shops", "set", "--shop", SHOP, "--name", "  Acme Print Co. ")
        == "shop shop-1 is named 'Acme Print Co.', time zone UTC\n"
    )


def test_ledger_balance_and_alerts(cli: Cli) -> None:
    for cents in (2000, 500):
        sql(
            cli,
            "INSERT INTO ledger_entries (action_id, shop_id, customer_id, amount_cents, reason)"
            " VALUES ($1, $2, $3, $4, $5)",
            uuid.uuid4().hex,
            SHOP,
            "cust-1",
            cents,
            "test",
        )
    sql(
        cli,
        "INSERT INTO alerts (action_id, shop_id, customer_id, rule_id, text, occurred_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        uuid.uuid4().hex,
        SHOP,
        "cust-1",
        "r1",
        "Ann Lee (cust-1) reached 5 orders: Alert at 5",
        datetime.now(UTC),
    )
    assert cli.ok("ledger", "balance", "--shop", SHOP, "--customer", "cust-1") == "$25.00\n"
    assert cli.ok("ledger", "balance", "--shop", SHOP, "--customer", "cust-2") == "$0.00\n"
    listing = cli.ok("alerts", "list", "--shop", SHOP, "--limit", "5").splitlines()
    assert listing[0].split() == ["TIME", "CUSTOMER", "TEXT"]
    assert "cust-1" in listing[1] and "reached 5 orders: Alert at 5" in listing[1]


def test_unreachable_services_are_one_line_exit_1(cli: Cli) -> None:
    """Spawned as ``python -m streamapp``, not forked: the exit code and the one line as a shell sees them."""
    cli = cli.spawned()
    cli.env = {
        **cli.env,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/db",
    }
    assert "Kafka is not reachable" in cli.refused("rules", "list", "--shop", SHOP, code=1)
    line = cli.refused("ledger", "balance", "--shop", SHOP, "--customer", "c", code=1)
    assert "database" in line and "hunter2" not in line
