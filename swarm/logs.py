"""The `logFormat` option: how a node's log lines look on stderr.

`text` (the default) is one readable line per record. `json` is one JSON object per line, for log
collectors (Loki, Elasticsearch, CloudWatch): `time` (ISO 8601, UTC), `level`, `logger`, `node` (the
node's serverName, in every line, so that the lines of several nodes can be told apart once merged),
`message`, and `exception` (the traceback) when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging

__all__ = ["JsonFormatter", "TEXT_FORMAT", "use_format"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, naming the node."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "node": self.node,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)  # a newline inside becomes \n: still one line


def use_format(log_format: str, node: str) -> None:
    """Give every handler of the root logger the `log_format` ("text" or "json") of node `node`."""
    formatter: logging.Formatter = (JsonFormatter(node) if log_format == "json"
                                    else logging.Formatter(TEXT_FORMAT))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
