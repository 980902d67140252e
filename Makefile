# Two commands matter: `make run` and `make test`. Both build .venv from nothing when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PHOTOS ?=
# pytest-xdist workers for `make test` (0: one process). Each test file stays on one worker.
TEST_WORKERS ?= 2
# torch and torchvision come from wheels on this disk (pip takes them without a big download).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: run test lint typecheck contracts unit bench screenshots package clean system-libs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[dev,scale]'
	touch $(STAMP)

# Qt's X11 plugin needs system libraries that PySide6 does not ship: installed when possible
# (root or sudo), otherwise the one command to run is printed.
system-libs: $(STAMP)
	@$(BIN)/python -m visuallens_app.gui.system_libs --install

run: $(STAMP) system-libs
	@if [ -n "$(PHOTOS)" ]; then $(BIN)/visuallens-app "$(PHOTOS)"; else $(BIN)/visuallens-app; fi

lint: $(STAMP)
	$(BIN)/ruff check visuallens_app tests benchmarks
	$(BIN)/ruff format --check visuallens_app tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	@$(BIN)/python -m visuallens_app.gui.system_libs --install --xvfb
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint typecheck contracts unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(or $(BENCH),all)

# A real X screen (Xvfb) when there is no display, so fonts and styles render as on a desktop.
# The steering panel needs a vision-language model: VLM=DIR|NAME, else a tiny random one (noise).
VLM ?=
SHOT_VLM := $(or $(VLM),build/screenshot-vlm)
screenshots: $(STAMP)
	@if [ -z "$(VLM)" ]; then $(BIN)/python -c "import sys; from pathlib import Path; \
		sys.path.insert(0, 'tests'); import tiny_vlms; tiny_vlms.build('llava', Path('$(SHOT_VLM)'))"; fi
	@if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null; then \
		VISUALLENS_SCREENSHOT_VLM=$(SHOT_VLM) xvfb-run -a -s "-screen 0 1280x800x24" \
			$(BIN)/python -m visuallens_app.gui.screenshots docs/screenshots; \
	else \
		VISUALLENS_SCREENSHOT_VLM=$(SHOT_VLM) $(BIN)/python -m visuallens_app.gui.screenshots docs/screenshots; \
	fi

package: $(STAMP)
	$(BIN)/python -m pip install --quiet pyinstaller
	$(BIN)/pyinstaller --noconfirm packaging/visuallens.spec

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
