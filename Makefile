.PHONY: demo test chaos lint bench venv clean

venv:
	@scripts/venv.sh

demo: venv
	.venv/bin/shipmate demo

test:
	scripts/test.sh -q

# the fault-injection tests alone (kill -9, SIGSTOP, Redis crashes, bursts); `make test` runs them too
chaos: venv
	scripts/test.sh -q -m chaos

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .

bench: venv
	scripts/bench.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
