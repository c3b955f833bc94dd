"""Log output of the command line: spotsafe's own at the asked verbosity, third parties quiet
unless asked for by name, and every line redacted.

``-v`` shows spotsafe's INFO lines, ``-vv`` its DEBUG lines. Third-party libraries stay at
WARNING whatever the verbosity: botocore's and urllib3's debug output holds the request
headers, and with them the access key id (``Credential=``) and the session token
(``X-Amz-Security-Token``). ``--debug-logger NAME`` (repeatable) or
``SPOTSAFE_DEBUG_LOGGERS=botocore,s3fs`` turns one on at DEBUG. Whatever is shown passes
through `spotsafe.redact.RedactingFilter` on the handler, so no logger, at any level, prints
a credential.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from spotsafe import redact

__all__ = ["ENV_DEBUG_LOGGERS", "QUIET_LOGGERS", "configure", "debug_loggers"]

ENV_DEBUG_LOGGERS = "SPOTSAFE_DEBUG_LOGGERS"
# Held at WARNING even if something lowers the root logger: their debug output is noisy and
# carries request headers.
QUIET_LOGGERS = ("asyncio", "aiobotocore", "boto3", "botocore", "fsspec", "s3fs", "s3transfer",
                 "urllib3", "gcsfs", "adlfs", "azure", "google")  # fmt: skip
FORMAT = "%(levelname)s %(name)s: %(message)s"


def debug_loggers(names: Iterable[str], env: str | None = None) -> list[str]:
    """The loggers asked for by name: ``--debug-logger`` values, then `ENV_DEBUG_LOGGERS`.

    Example:
        >>> debug_loggers(["botocore"], env="s3fs, urllib3,")
        ['botocore', 's3fs', 'urllib3']
    """
    env = os.environ.get(ENV_DEBUG_LOGGERS, "") if env is None else env
    out: list[str] = []
    for name in [*names, *env.split(",")]:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    return out


def configure(verbose: int, debug: Iterable[str] = ()) -> None:
    """Set up logging for one CLI run (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    if verbose > 0:
        logging.getLogger("spotsafe").setLevel(logging.WARNING - 10 * min(verbose, 2))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in debug:
        logging.getLogger(name).setLevel(logging.DEBUG)
    redact.install(logging.getLogger().handlers)
