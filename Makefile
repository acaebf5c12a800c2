# Two entry points: `make test` and `make demo`. Each creates .venv when missing and installs the
# package with its dev extras; ROS 2 Python wheels are added only when no system rclpy is importable.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SYSTEM_RCLPY := $(shell python3 -c 'import rclpy' >/dev/null 2>&1 && echo yes)
# Assets (real data + detector) for tests and the demo; override with ADAQUAL_ASSETS=/path.
ADAQUAL_ASSETS ?= $(if $(wildcard ../shared/ASSETS.md),$(abspath ../shared),)
export ADAQUAL_ASSETS
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: test test-slow demo lint venv clean

venv: $(STAMP)

$(STAMP): setup.py
	@test -x $(PY) || python3 -m venv $(if $(SYSTEM_RCLPY),--system-site-packages,) $(VENV)
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[dev$(if $(SYSTEM_RCLPY),,$(comma)ros)]'
	@touch $(STAMP)

comma := ,

lint: $(STAMP)
	$(VENV)/bin/ruff check adaqual_ros test launch setup.py

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: lint
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/adaqual demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
