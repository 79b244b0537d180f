.PHONY: demo test lint bench venv clean

venv:
	@scripts/venv.sh

demo: venv
	.venv/bin/shipmate demo

test:
	scripts/test.sh -q

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .

bench: venv
	scripts/bench.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
