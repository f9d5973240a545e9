# Set-up and entry points. `make bench` is the default job; `make test` the test suite.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= report,cluster,test
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: all install sysdeps test test-all bench clean

all: bench

# Headless MuJoCo rendering needs EGL (or OSMesa). Installed with apt when we are root,
# otherwise we print exactly what to install and carry on (only DMC vision needs it).
sysdeps:
	@if ldconfig -p | grep -q libEGL.so.1 && ldconfig -p | grep -q libOSMesa; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing EGL/OSMesa for headless MuJoCo rendering (apt)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	     libegl1 libgl1 libgl1-mesa-dri libosmesa6 >/dev/null) || \
	  echo "WARNING: apt could not install libegl1 libgl1-mesa-dri libosmesa6; DMC vision will not render."; \
	else \
	  echo "NOTE: DMC vision needs headless GL: run 'sudo apt-get install libegl1 libgl1-mesa-dri libosmesa6'"; \
	fi

$(STAMP): setup.cfg pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: sysdeps $(STAMP)

# Tests run in up to 4 worker processes (pytest-xdist; 2 on a 2-core machine): they are mostly
# XLA compiles, which use one core each.
test: install
	$(BIN)/python -m pytest -q -n auto --maxprocesses=4 -m "not slow" --timeout=900

test-all: install
	$(BIN)/python -m pytest -q --timeout=3600

# Default job: a short random-agent sweep over the 26 Atari-100k games (5k agent steps, 8 eval
# episodes each; about 4 minutes on 2 cores), then the HNS table beside published methods.
BENCH_DIR ?= runs/bench
bench: install
	$(BIN)/python -m experiments.sweep --config=experiments/configs/random.py:atari100k \
	  --games=atari100k --seeds=1 --workdir=$(BENCH_DIR)/runs --concurrency=2 \
	  --config.run.steps=5000 --config.run.eval_episodes=8
	$(BIN)/python -m benchmarks.report --runs=$(BENCH_DIR)/runs --compare=IRIS,STORM,DIAMOND \
	  --out=$(BENCH_DIR)/report

clean:
	rm -rf $(VENV) runs
