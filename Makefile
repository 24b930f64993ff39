# `make run`: set up and run the main job.  `make test`: set up and run the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) -e '.[test,bench]'
	touch $@

run: install
	$(BIN)/mario-apo train --algo apo --level 1-1 --total-steps 20480

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/hadolint Dockerfile
