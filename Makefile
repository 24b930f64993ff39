# `make run`: set up and run the main job.  `make test`: set up, lint, and run every test.
# `make test-fast`: the tests that neither start the emulator nor train (seconds).
# `make docker-smoke`: build the image and check it end to end (Docker, or root on Debian; 15-20 min).
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test test-fast lint docker-smoke
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) -e '.[test,bench,tensorboard,ray]'
	touch $@

run: install
	$(BIN)/mario-apo train --algo apo --level 1-1 --total-steps 20480

# Two test processes (pytest-xdist): most tests wait on env workers, subprocesses or Ray, so two
# share a 2-core box well (8.5 min instead of 11.3 on this one).
test: install lint
	$(BIN)/python -m pytest -q -n 2

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

docker-smoke:
	bash scripts/docker-smoke.sh
