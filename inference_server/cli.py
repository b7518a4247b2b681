"""``prime-spark-server``: read the settings, refuse bad ones with a clear message, serve."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from inference_server import __version__
from inference_server.app import create_app
from inference_server.config import ConfigError, load_settings

# The access log names the route and status; it never includes headers, so tokens stay out.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs'


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prime-spark-server",
        description="Prime Spark node: OpenAI-compatible local LLM server for Home Assistant.",
    )
    parser.add_argument("--config", type=Path, help="YAML settings file (or PRIME_SPARK_CONFIG)")
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument("--port", help="port to listen on (server.port)")
    parser.add_argument("--data-dir", help="where models, the node id and tokens live")
    parser.add_argument("--log-level", help="debug, info, warning or error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "data_dir": args.data_dir,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    try:
        settings = load_settings(args.config, overrides={"server": overrides})
    except ConfigError as err:
        print(f"prime-spark-server: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        access_log_format=ACCESS_LOG_FORMAT,
        handler_cancellation=True,
        print=lambda message: logging.getLogger("prime_spark").info(message.strip()),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
