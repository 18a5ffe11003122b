"""Never lose, never double: load with workers killed, added, removed and frozen, and providers failing.

Each test drives known input through two or more real workers while a nemesis strikes
(see :mod:`tests.harness.chaos`), heals the world, waits for zero lag within
``DRAIN_BOUND_SECONDS`` and has the verifier recompute every expected effect from the
input: every credit, alert, notification, email, SMS and payment link exactly once, none
missing, every poison message dead-lettered with its bytes, and delivery records that tell
the truth.

Bounded by default (35 to 45 s of load each). ``STREAMAPP_SOAK_SECONDS=1200`` makes
:func:`test_soak_with_every_fault` the soak: every fault, at random, for that long.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.harness.chaos import NEMESES, Input, Verdict, World, assert_sound, chaos_world, run_chaos, verify

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SOAK_SECONDS = float(os.environ.get("STREAMAPP_SOAK_SECONDS") or 0)


def report(world: World, given: Input, verdict: Verdict, name: str) -> dict[str, object]:
    """The figures of a run: printed (``pytest -s``) and kept next to the logs."""
    figures: dict[str, object] = {
        "scenario": name,
        **world.tally.summary(),
        "customers": len(given.orders),
        "expected_actions": verdict.expected_actions,
        "duplicates": verdict.duplicates,
        "lost": verdict.lost,
        "provider_copies": verdict.provider_copies,
        "stale_writes_skipped": world.stale_writes_skipped(),
        "lag_zero_after_seconds": round(world.drained_in, 1),
    }
    (world.tmp / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    return figures


def test_kill9_loop_loses_nothing_and_doubles_nothing(
    kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp_path: Path
) -> None:
    with chaos_world(kafka_bootstrap, twilio_api, stripe_api, tmp_path, "kill") as world:
        given = run_chaos(world, seconds=35, nemeses=("kill",), every=7, seed=1)
        verdict = verify(world, given)
        report(world, given, verdict, "kill -9 loop")
        assert world.tally.kills >= 3
        assert_sound(world, given, verdict)


def test_rebalance_storm_loses_nothing_and_lag_returns_to_zero(
    kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp_path: Path
) -> None:
    with chaos_world(kafka_bootstrap, twilio_api, stripe_api, tmp_path, "storm") as world:
        given = run_chaos(world, seconds=35, nemeses=("add", "remove"), every=5, seed=2)
        verdict = verify(world, given)
        report(world, given, verdict, "rebalance storm")
        assert world.tally.rebalances >= 5
        assert_sound(world, given, verdict)
        assert verdict.provider_copies == 0, "no worker was killed: not even the crash window may copy"


def test_provider_faults_are_retried_and_recorded_truthfully(
    kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp_path: Path
) -> None:
    with chaos_world(kafka_bootstrap, twilio_api, stripe_api, tmp_path, "faults") as world:
        given = run_chaos(
            world, seconds=36, nemeses=("smtp", "twilio", "stripe", "postgres"), every=4, seed=3, in_turn=True
        )
        verdict = verify(world, given)
        report(world, given, verdict, "provider faults")
        assert_sound(world, given, verdict)
        tally = world.tally
        assert min(tally.smtp_faults, tally.twilio_faults, tally.stripe_faults, tally.postgres_restarts) >= 1, tally
        # The faults were felt, and the records say so: retried rows count their attempts.
        retried = world.line.sql(
            "SELECT channel, count(*) FROM deliveries WHERE shop_id = $1 AND attempts > 1 GROUP BY channel", world.shop
        )
        assert retried, "no delivery needed a second attempt: the faults were not felt"
        refused = [e for e in world.twilio.message_creates() if e.status in (429, 503)]
        assert refused, "no SMS met a Twilio fault"


def test_a_zombie_worker_woken_after_its_partitions_moved_doubles_nothing(
    kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp_path: Path
) -> None:
    with chaos_world(kafka_bootstrap, twilio_api, stripe_api, tmp_path, "zombie") as world:
        given = run_chaos(world, seconds=35, nemeses=("zombie",), every=3, seed=4)
        verdict = verify(world, given)
        report(world, given, verdict, "zombie")
        assert world.tally.zombies >= 2
        assert_sound(world, given, verdict)
        assert verdict.provider_copies == 0


@pytest.mark.timeout(300 + 2 * SOAK_SECONDS)  # the soak outlasts the suite's 300 s per test
def test_soak_with_every_fault(kafka_bootstrap: str, twilio_api: str, stripe_api: str, tmp_path: Path) -> None:
    """Every nemesis at random; 45 s by default, ``STREAMAPP_SOAK_SECONDS`` in soak mode."""
    seconds = SOAK_SECONDS or 45
    with chaos_world(kafka_bootstrap, twilio_api, stripe_api, tmp_path, "soak") as world:
        given = run_chaos(world, seconds=seconds, nemeses=NEMESES, every=5, seed=int(seconds))
        verdict = verify(world, given)
        report(world, given, verdict, f"soak {seconds:.0f}s")
        assert_sound(world, given, verdict)
