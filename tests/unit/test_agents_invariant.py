"""Every consumed topic has exactly one consumer: an agent with concurrency=1, or a batch path
(:mod:`streamapp.batches`, one task over its channel).

faust-streaming #606 commits past an in-flight message when acks arrive out of
order, which several streams over one partition produce (more actors, or several
agents on one topic). A SIGKILL then loses those messages; see agents/actions.py.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import Counter

import agents
from streamapp.app import app, runtime
from streamapp.batches import RawChannel
from streamapp.topics import ALL_TOPICS, INTERNAL_TOPICS, topic_name


def test_each_topic_has_one_agent_with_concurrency_one() -> None:
    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"agents.{module.name}")
    consumed: Counter[str] = Counter()
    assert app.agents, "no agents registered"
    for agent in app.agents.values():
        assert agent.concurrency == 1, f"{agent.name} has concurrency {agent.concurrency}"
        for topic in agent.channel.topics:  # type: ignore[attr-defined]
            consumed[topic] += 1
    batched = [channel for channel in app.topics if isinstance(channel, RawChannel)]
    assert batched, "no batch path registered (agents/payments.py has one)"
    for channel in batched:
        for topic in channel.topics:
            consumed[topic] += 1
    shared = {topic: n for topic, n in consumed.items() if n > 1}
    assert not shared, f"topics consumed by more than one agent: {shared}"


def test_streamapp_creates_every_topic_the_worker_consumes_or_writes_before_it_starts() -> None:
    """A topic the worker creates itself moments before joining its group can be missing from
    the join's metadata; the assignor then skips it for minutes. `ensure_topics` makes them all."""
    for module in pkgutil.iter_modules(agents.__path__):
        importlib.import_module(f"agents.{module.name}")
    created = {topic_name(runtime.settings, spec) for spec in ALL_TOPICS + INTERNAL_TOPICS}
    consumed = {topic for agent in app.agents.values() for topic in agent.channel.topics}  # type: ignore[attr-defined]
    consumed |= {topic for channel in app.topics if isinstance(channel, RawChannel) for topic in channel.topics}
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    assert consumed | changelogs <= created, (consumed | changelogs) - created
