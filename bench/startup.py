"""Start-up and stop time of the embedded services (Kafka, PostgreSQL, Prism serving Twilio's API):
`python bench/startup.py [RUNS]`.

Prints one line per run and the median; a measurement, not a test.
"""

from __future__ import annotations

import statistics
import sys
import time

from streamapp.embedded.kafka import EmbeddedKafka, ensure_kafka_libs
from streamapp.embedded.postgres import EmbeddedPostgres
from streamapp.embedded.twilio import EmbeddedTwilio, ensure_prism
from streamapp.settings import Settings


def timed(start: object, stop: object) -> tuple[float, float]:
    t0 = time.monotonic()
    start()  # type: ignore[operator]
    t1 = time.monotonic()
    stop()  # type: ignore[operator]
    return t1 - t0, time.monotonic() - t1


def main(runs: int) -> None:
    settings = Settings()
    libs = ensure_kafka_libs(settings.cache_dir)
    prism = ensure_prism(settings.cache_dir)
    results: dict[str, list[tuple[float, float]]] = {"kafka": [], "postgres": [], "twilio": []}
    for i in range(runs):
        kafka = EmbeddedKafka(libs)
        results["kafka"].append(timed(kafka.start, kafka.stop))
        postgres = EmbeddedPostgres(settings.postgres_bin_dir)
        results["postgres"].append(timed(postgres.start, postgres.stop))
        twilio = EmbeddedTwilio(prism)
        results["twilio"].append(timed(twilio.start, twilio.stop))
        print(
            f"run {i + 1}: "
            + " | ".join(
                f"{name} start {pairs[-1][0]:.2f}s stop {pairs[-1][1]:.2f}s" for name, pairs in results.items()
            )
        )
    for name, pairs in results.items():
        starts = [s for s, _ in pairs]
        print(f"{name}: median start {statistics.median(starts):.2f}s (min {min(starts):.2f}, max {max(starts):.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
