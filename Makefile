# The two commands of the README: `make run` and `make test`. Both install missing build tools,
# build once in release (tests run with --release, so one profile serves both) and keep the build
# outside the clone, where later builds and CI reuse it.

CARGO_TARGET_DIR ?= $(HOME)/.cache/lathe/target
export CARGO_TARGET_DIR
LATHE := $(CARGO_TARGET_DIR)/release/lathe

.PHONY: run test build setup bench clippy

run: build
	$(LATHE) $(ARGS)

test: setup
	cargo test --release --locked

build: setup
	cargo build --release --locked

bench: build
	$(LATHE) bench ui

clippy: setup
	cargo clippy --release --locked --all-targets -- -D warnings

setup:
	@./scripts/setup.sh
