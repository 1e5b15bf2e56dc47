# The two commands of the README.
#   make run   — the service with embedded defaults (SQLite + bundled broker)
#   make test  — install what the tests need (Debian + Python packages) and run every test
PYTHON ?= python3

.PHONY: run test lint faults

run:
	$(PYTHON) -m pip install --quiet .
	registry-workers up

test:
	bash .ci/install-system-deps
	$(PYTHON) -m pip install --quiet -e '.[test]'
	$(PYTHON) -m ruff check workers tests bench
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest -q -p no:cacheprovider

lint:
	$(PYTHON) -m ruff check workers tests bench
	$(PYTHON) -m mypy

# The fault-injection suite alone (CI runs it inside `make test`); prints the scenario table.
faults:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/faults
