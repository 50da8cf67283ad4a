"""The yardstick from outside: a WeRoBot robot (gunicorn, sync, one worker) on the same load.

Checks the signature, parses the push and answers a text reply, as a WeRoBot
moderation bot would; no session storage (WeRoBot's default is a SQLite file per
message). Run by bench/run.py from a scratch venv that has WeRoBot and gunicorn:
``gunicorn -w 1 -k sync -b 127.0.0.1:PORT --chdir bench werobot_app:app``.
"""

from __future__ import annotations

import logging
import os

import werobot  # type: ignore[import-not-found]

robot = werobot.WeRoBot(token=os.environ.get("BENCH_TOKEN", "benchtoken"),
                        enable_session=False)
robot.logger.setLevel(logging.ERROR)


@robot.text
def moderate(message):  # type: ignore[no-untyped-def]
    """A toy rule: the bare cost of WeRoBot's receive, parse and reply."""
    return "请勿发布广告" if "微信" in message.content else "收到"


@robot.handler
def other(_message):  # type: ignore[no-untyped-def]
    return "收到"


app = robot.wsgi
