# Switchboard: `make run` starts everything, `make test` runs the whole suite.
# Both create the virtual environment and install the project first (only Python >= 3.11 needed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck unit postgres-server bench clean lock test-latest test-discord-floor model model-semantic heldout lock-train report-screenshots

# Every install (run, test, CI) takes the exact versions and hashes of requirements.lock, so a
# new release of a dependency never changes behaviour under a green history. `make lock` renews
# the lock on purpose; `make test-latest` (not in CI) runs the suite on the newest releases.
LOCK := requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Switchboard needs Python 3.11 or newer (found: $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || \
		{ echo "could not create a virtual environment: on Debian/Ubuntu run 'apt-get install python3-venv'"; exit 1; }
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	@# The console's browser tests drive Debian's Chromium (never a downloaded browser build).
	@test -x /usr/bin/chromium || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "warning: could not install chromium; the console's browser tests will not run"
	@touch $(STAMP)

# The triage models (issue 15): trained in an environment of their own, .venv-train, from the hashed
# requirements-train.lock (the fastText trainer and the runtime's predictor install the same module);
# the models are written to rules/models/ and shipped. Deterministic for a seed (one thread).
TRAIN := .venv-train
TRAIN_LOCK := requirements-train.lock
$(TRAIN)/.installed-stamp: $(TRAIN_LOCK)
	@test -x $(TRAIN)/bin/python || $(PYTHON) -m venv $(TRAIN)
	$(TRAIN)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(TRAIN_LOCK)
	@touch $@

# The project itself, editable, with the rules engine's per-message path compiled by mypyc
# (setup.py): built again whenever a module of rules/ changes, so a compiled module never runs
# older code than its source (rules/__init__.py warns if one does).
BUILT := $(VENV)/.built-stamp
$(BUILT): $(STAMP) setup.py pyproject.toml $(wildcard rules/*.py)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# setuptools copies an unchanged extension with its old time: built now, so dated now.
	@touch rules/*.so 2>/dev/null || true
	@$(BIN)/python -c 'from rules import native; native.compiled() or print("warning: the rules engine was not compiled (no C compiler?): it runs as plain Python, ~1.3x slower; see setup.py")'
	@touch $@

install: $(BUILT)

run: $(BUILT)
	$(BIN)/switchboard run

lint: $(BUILT)
	$(BIN)/ruff check router adapters rules sla triage kb impostors insight tests bench
	$(BIN)/ruff format --check router adapters rules sla triage kb impostors insight tests bench

typecheck: $(BUILT)
	$(BIN)/mypy

unit: $(BUILT) $(TRAIN)/.installed-stamp postgres-server
	$(BIN)/python -m pytest

# The PostgreSQL export's tests (tests/router/test_exporter_postgres.py) start a private server
# from Debian's package: installed here when missing (as root with apt-get), else they say why.
postgres-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
		[ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } || \
		echo "warning: could not install postgresql; the PostgreSQL export's tests will fail"

test: lint typecheck unit test-discord-floor

# The report pages' screenshots in docs/analytics.md, from a generated month of traffic (Chromium).
report-screenshots: $(BUILT)
	$(BIN)/python -m tests.console.screenshots docs/img

bench: $(BUILT)
	$(BIN)/switchboard bench
	$(BIN)/switchboard bench rules

# The lock covers Python 3.11 and newer on every platform (markers), the build backend included.
lock: $(BUILT)
	$(BIN)/uv pip compile pyproject.toml deploy/build-requirements.in --extra dev --universal \
		--python-version 3.11 --generate-hashes --quiet -o $(LOCK)

LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade -e '.[dev]'
	@echo "newest versions (compare with $(LOCK)):"; $(LATEST)/bin/python -m pip freeze --exclude-editable
	$(LATEST)/bin/ruff check router adapters rules sla triage kb impostors insight tests bench
	$(LATEST)/bin/mypy
	$(LATEST)/bin/python -m pytest

# The Discord adapter's tests on the oldest discord.py that pyproject.toml allows (its floor): the
# lock pins the newest, so an API newer than the floor would otherwise pass unnoticed. The floor's
# venv holds discord.py alone and sees the locked environment behind it (a site dir appended by a
# .pth file), so it costs a few seconds, not a second full install; CI runs it as part of `make test`.
FLOOR := .venv-discord-floor
DISCORD_FLOOR = $(shell sed -n 's/^ *discord = \["discord\.py>=\([0-9.]*\)"\]/\1/p' pyproject.toml)
test-discord-floor: $(BUILT)
	rm -rf $(FLOOR)
	$(PYTHON) -m venv --without-pip $(FLOOR)
	$(BIN)/python -m pip install --quiet --no-deps --target "$$(echo $(FLOOR)/lib/python3*/site-packages)" 'discord.py==$(DISCORD_FLOOR)'
	echo "import site; site.addsitedir('$(abspath $(VENV))/lib/$$(basename $$(echo $(FLOOR)/lib/python3*))/site-packages')" \
		> "$$(echo $(FLOOR)/lib/python3*/site-packages)/zz-locked-env.pth"
	$(FLOOR)/bin/python -c 'import discord; print("discord.py", discord.__version__, "(floor)")'
	$(FLOOR)/bin/python -m pytest -q -p no:randomly -p no:cacheprovider tests/discord

# The second opinion (triage/semantic.py) is trained against the fastText models' out-of-fold
# predictions, so `make model` retrains it too; `make model-semantic` alone after a fastText change.
model: $(TRAIN)/.installed-stamp
	PYTHONPATH=. $(TRAIN)/bin/python -m triage.train
	PYTHONPATH=. $(TRAIN)/bin/python -m triage.semantic

model-semantic: $(TRAIN)/.installed-stamp
	PYTHONPATH=. $(TRAIN)/bin/python -m triage.semantic

# The triage figures on both held-out sets (docs/triage.md): figures only, never their messages,
# which whoever tunes the rules or the model must not read.
heldout: $(BUILT)
	$(BIN)/switchboard model eval --samples triage/corpus/dev --figures-only
	$(BIN)/switchboard model eval --samples triage/corpus/dev2 --figures-only

lock-train: $(BUILT)
	$(BIN)/uv pip compile deploy/train-requirements.in --universal --python-version 3.11 --generate-hashes \
		--quiet -o $(TRAIN_LOCK)

clean:
	rm -rf $(VENV) $(LATEST) $(FLOOR) $(TRAIN) .pytest_cache .mypy_cache .ruff_cache *.egg-info
	rm -rf build rules/*.so rules_native__mypyc*.so  # the compiled modules (setup.py)
