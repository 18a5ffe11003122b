# The two set-up commands of the README are `make run` and `make test`;
# everything else here is what they call.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# bench/pipeline.py's quixstreams variant runs in its own venv: quixstreams 3.28 needs pydantic<2.14,
# which constraints.txt's pydantic pins refuse; everything else keeps the pins.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: run test lint install system-deps kafka-jars twilio-mock stripe-mock bench bench-venv clean

run: install kafka-jars twilio-mock stripe-mock  ## install everything, run the worker and the demo on embedded Kafka, PostgreSQL, SMTP
	$(BIN)/streamapp run --demo

test: install kafka-jars twilio-mock stripe-mock lint  ## install everything, lint, run the whole test suite
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

install: system-deps $(STAMP)

system-deps:
	@tools/ensure-system-deps.sh

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

kafka-jars: install  ## resolve Apache Kafka's jars from Maven Central (cached)
	@$(BIN)/python -c "from streamapp.embedded.kafka import ensure_kafka_libs; \
	from streamapp.settings import get_settings; print('kafka jars:', ensure_kafka_libs(get_settings().cache_dir))"

twilio-mock: install  ## install Prism and Twilio's OpenAPI documents with npm ci (cached): the local Twilio API
	@$(BIN)/python -c "from streamapp.embedded.twilio import ensure_prism; \
	from streamapp.settings import get_settings; print('twilio mock:', ensure_prism(get_settings().cache_dir))"

stripe-mock: install  ## build Stripe's stripe-mock with go install (cached): the local Stripe API
	@$(BIN)/python -c "from streamapp.embedded.stripe import ensure_stripe_mock; \
	from streamapp.settings import get_settings; print('stripe mock:', ensure_stripe_mock(get_settings().cache_dir))"

bench-venv: $(BENCH_STAMP)  ## the venv of bench/pipeline.py's quixstreams variant

$(BENCH_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	grep -v -E '^pydantic(_core|-settings)?==' constraints.txt > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/pip install -q -c $(BENCH_VENV)/constraints.txt -e '.[bench]'
	touch $@

bench: install kafka-jars bench-venv  ## measurements, not tests: start-up; pipeline vs plain aiokafka vs quixstreams
	$(BIN)/python bench/startup.py 5
	$(BIN)/python bench/pipeline.py --events 10000 --quix-python $(BENCH_VENV)/bin/python

clean:
	rm -rf $(VENV) $(BENCH_VENV) .streamapp .mypy_cache .ruff_cache *.egg-info
