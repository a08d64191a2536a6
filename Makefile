# make demo   train a small model on data/sample on the CPU, embed, run one query
# make test   run the test suite
# Both first create .venv with the pinned requirements (once; again when requirements.txt changes).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Each demo is a new run folder: runs are never overwritten.
DEMO_RUN := demo-$(shell date +%Y%m%d-%H%M%S)
# An edge-on galaxy (see data/sample/galaxy_labels.csv): its neighbours should be edge-on too.
DEMO_QUERY := 587722983360102542.jpg
DEMO_SETTINGS := --DATA_DIR=data/sample/galaxies --AUGMENTATION=astro --INPUT_SIZE=64 \
	--BATCH_SIZE=64 --MAX_EPOCHS=30 --WARMUP_EPOCHS=3 --LOG_EVERY_N_STEPS=4

.PHONY: demo test

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q tests

demo: $(BIN)/.installed
	$(BIN)/python SSL_Train.py --RUN_NAME=$(DEMO_RUN) $(DEMO_SETTINGS)
	$(BIN)/python SSL_Evaluate.py --RUN=checkpoints/$(DEMO_RUN) --QUERY=$(DEMO_QUERY)
