# The two commands of the README, plus benchmarks. Each target sets up what it needs (scripts/bootstrap.sh).
SHELL := /bin/bash
ENV := source scripts/env.sh &&
ARGS ?=

.PHONY: run test setup bench soak
run: setup  ## the main job: virtual camera -> detector -> matcher over DDS, live figures and an annotated video
	@mkdir -p out && $(ENV) install/usp_ros/lib/usp_ros/frontend --out out/frontend_matches.mp4 $(ARGS)

test: setup  ## the whole test suite
	@$(ENV) pytest -v $(ARGS)

setup:
	@scripts/bootstrap.sh

bench: setup  ## every benchmark: messages, model/training vs OpenCV, detector node, matcher
	@$(ENV) python -m usp_ros.tools.bench_messages && usp-bench && python -m usp_ros.tools.bench_detector && python -m usp_ros.tools.bench_matcher

soak: setup  ## 10 minutes of the virtual camera at 30 Hz through detector and matcher: memory, latency, drops per minute
	@$(ENV) python -m usp_ros.tools.bench_soak $(ARGS)
