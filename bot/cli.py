"""`shipmate web | worker | demo | check-config [PATH]`: the only place that exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.adapters.logs import configure, log_format
from bot.config.durations import parse_duration
from bot.config.loader import Config, ConfigError, check_config, load_config
from bot.config.settings import Settings, SettingsError

log = logging.getLogger("shipmate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _web(settings: Settings, config: Config) -> None:
    from bot.runtime.app import connect_redis, make_store, slack_client, start_web

    stop = asyncio.Event()
    _stop_on_signals(stop)
    redis = connect_redis(settings.redis_url)
    client = slack_client(settings.slack_bot_token, settings.slack_api_url)
    server = await start_web(
        config,
        make_store(redis),
        client,
        signing_secret=settings.slack_signing_secret,
        host=settings.host,
        port=settings.port,
        github_webhook_secret=settings.github_webhook_secret,
        app_token=settings.slack_app_token,
    )
    mode = "Socket Mode" if settings.slack_app_token else "HTTP mode"
    log.info("web (%s) listening on %s:%s", mode, settings.host, server.port)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await redis.aclose()


DEFAULT_LOCK_TTL = 30.0
DEFAULT_RECLAIM_IDLE = 30.0
DEFAULT_MAX_DELIVERIES = 5


@dataclass(frozen=True, slots=True)
class WorkerTuning:
    """Worker knobs from the environment; the defaults suit production."""

    lock_ttl: float = DEFAULT_LOCK_TTL
    reclaim_idle: float = DEFAULT_RECLAIM_IDLE
    max_deliveries: int = DEFAULT_MAX_DELIVERIES

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerTuning:
        def seconds(name: str, default: float) -> float:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = parse_duration(raw)
            except ValueError as err:
                raise SettingsError(f"{name}: {err}") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive, got {raw!r}")
            return value

        raw = environ.get("SHIPMATE_MAX_DELIVERIES", "").strip()
        try:
            deliveries = int(raw) if raw else DEFAULT_MAX_DELIVERIES
        except ValueError:
            deliveries = 0
        if deliveries < 1:
            raise SettingsError(f"SHIPMATE_MAX_DELIVERIES must be a whole number >= 1, got {raw!r}")
        return cls(
            lock_ttl=seconds("SHIPMATE_LOCK_TTL", DEFAULT_LOCK_TTL),
            reclaim_idle=seconds("SHIPMATE_RECLAIM_IDLE", DEFAULT_RECLAIM_IDLE),
            max_deliveries=deliveries,
        )


async def _worker(settings: Settings, config: Config, tuning: WorkerTuning) -> None:
    from bot.runtime.app import build_worker, connect_redis, make_store, slack_client

    stop = asyncio.Event()
    _stop_on_signals(stop)
    redis = connect_redis(settings.redis_url)
    worker = build_worker(
        config,
        make_store(redis),
        slack_client(settings.slack_bot_token, settings.slack_api_url),
        lock_ttl=tuning.lock_ttl,
        reclaim_idle=tuning.reclaim_idle,
        max_deliveries=tuning.max_deliveries,
    )
    log.info(
        "worker %s started (lock ttl %gs, reclaim idle %gs, max deliveries %d)",
        worker.name,
        tuning.lock_ttl,
        tuning.reclaim_idle,
        tuning.max_deliveries,
    )
    try:
        await worker.run(stop)
    finally:
        await redis.aclose()


def _load(settings: Settings) -> Config:
    return load_config(settings.config_path)


def _print_escaped(text: str) -> None:
    # Whatever the file holds (a lone surrogate, text the terminal cannot show) is printed as an
    # escape rather than ending check-config with an encoding traceback.
    encoding = sys.stdout.encoding or "utf-8"
    print(text.encode(encoding, "backslashreplace").decode(encoding))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipmate", description="Slack ChatOps release bot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("web", help="serve Slack requests (HTTP or Socket Mode) and webhooks")
    sub.add_parser("worker", help="collect commits, deploy, roll back, update Slack")
    demo = sub.add_parser("demo", help="play the whole release loop on a local Slack workspace")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary folder")
    demo.add_argument(
        "--docker", action="store_true", help="deploy containers on the local Docker engine"
    )
    demo.add_argument(
        "--serve", action="store_true", help="play nothing; serve the stack for a browser"
    )
    demo.add_argument("--port", type=int, default=3100, help="--serve's port (default 3100)")
    emulator = sub.add_parser("emulator", help="a local Slack workspace in the browser")
    emulator.add_argument("--port", type=int, default=3100, help="default 3100")
    emulator.add_argument("--request-url", default=None, help="where the app receives requests")
    check = sub.add_parser("check-config", help="validate a config file and print what is wrong")
    check.add_argument("path", nargs="?", default=None)
    args = parser.parse_args(argv)
    try:
        fmt = log_format(args.command, os.environ)
    except ValueError as err:
        print(f"shipmate {args.command}: {err}", file=sys.stderr)
        return 2
    configure(fmt, os.environ.get("LOG_LEVEL", "INFO"))

    if args.command == "check-config":
        path = Path(args.path or os.environ.get("SHIPMATE_CONFIG", "shipmate.yml"))
        config, lines = check_config(path)
        _print_escaped("\n".join(lines))
        return 0 if config is not None else 1
    if args.command == "emulator":
        from bot.local.emulator_cmd import run_emulator

        return run_emulator(args.port, args.request_url)
    if args.command == "demo" and args.serve:
        from bot.local.emulator_cmd import serve_demo

        return serve_demo(args.port)
    if args.command == "demo":
        from bot.local.demo import run_demo

        return asyncio.run(run_demo(keep=args.keep, docker=args.docker))

    try:
        settings = Settings.from_env(os.environ)
        tuning = WorkerTuning.from_env(os.environ) if args.command == "worker" else None
        config = _load(settings)
    except (SettingsError, ConfigError) as err:
        print(f"shipmate {args.command}: {err}", file=sys.stderr)
        return 2
    if tuning is None:
        asyncio.run(_web(settings, config))
    else:
        asyncio.run(_worker(settings, config, tuning))
    return 0


if __name__ == "__main__":
    sys.exit(main())
