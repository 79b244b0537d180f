"""`shipmate web | worker | demo | check-config [PATH]`: the only place that exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Config, ConfigError, check_config, load_config
from bot.settings import Settings, SettingsError

log = logging.getLogger("shipmate")


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _web(settings: Settings, config: Config) -> None:
    from bot.app import connect_redis, make_store, slack_client, start_web

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
    )
    log.info("web listening on %s:%s", settings.host, server.port)
    try:
        await stop.wait()
    finally:
        await server.stop()
        await redis.aclose()


async def _worker(settings: Settings, config: Config) -> None:
    from bot.app import build_worker, connect_redis, make_store, slack_client

    stop = asyncio.Event()
    _stop_on_signals(stop)
    redis = connect_redis(settings.redis_url)
    worker = build_worker(
        config, make_store(redis), slack_client(settings.slack_bot_token, settings.slack_api_url)
    )
    log.info("worker %s started", worker.name)
    try:
        await worker.run(stop)
    finally:
        await redis.aclose()


def _load(settings: Settings) -> Config:
    return load_config(settings.config_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipmate", description="Slack ChatOps release bot")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("web", help="serve Slack requests (HTTP) and webhooks")
    sub.add_parser("worker", help="collect commits, deploy, roll back, update Slack")
    demo = sub.add_parser("demo", help="play the whole release loop on a local Slack workspace")
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary folder")
    demo.add_argument(
        "--docker", action="store_true", help="deploy containers on the local Docker engine"
    )
    check = sub.add_parser("check-config", help="validate a config file and print what is wrong")
    check.add_argument("path", nargs="?", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    if args.command == "check-config":
        path = Path(args.path or os.environ.get("SHIPMATE_CONFIG", "shipmate.yml"))
        config, lines = check_config(path)
        print("\n".join(lines))
        return 0 if config is not None else 1
    if args.command == "demo":
        from bot.demo import run_demo

        return asyncio.run(run_demo(keep=args.keep, docker=args.docker))

    try:
        settings = Settings.from_env(os.environ)
        config = _load(settings)
    except (SettingsError, ConfigError) as err:
        print(f"shipmate {args.command}: {err}", file=sys.stderr)
        return 2
    runner = _web if args.command == "web" else _worker
    asyncio.run(runner(settings, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
