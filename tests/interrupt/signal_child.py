"""A child process for the signal tests: a tiny "training loop" under a SignalCatcher.

Usage: ``python signal_child.py stop|twice``. Prints ``ready`` once the handlers are in, then:
``stop``: on a stop request prints it as JSON and exits 75 (the spotsafe contract);
``twice``: on the first SIGINT prints ``stopping`` and keeps "flushing" until the second SIGINT
raises KeyboardInterrupt, then exits 130. Both print ``restored True`` when the previous
handlers are back after the ``with`` block.
"""

from __future__ import annotations

import json
import signal
import sys
import time

from spotsafe.interrupt import SignalCatcher, StopFlag

LIMIT_S = 30.0  # the parent kills us long before; only guards against a hung test


def previous_handler(signum: int, frame: object) -> None:
    print("previous handler ran", flush=True)


def main(mode: str) -> int:
    signal.signal(signal.SIGTERM, previous_handler)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    flag = StopFlag()
    end = time.monotonic() + LIMIT_S
    code = 1
    try:
        with SignalCatcher(flag, grace_s=12.5):
            print("ready", flush=True)
            while time.monotonic() < end:
                r = flag.wait(timeout_s=0.01)  # a step of "work", interruptible by signals
                if r is None:
                    continue
                if mode == "stop":
                    # deadline - received on a monotonic clock near 10^4 s: 12.5 +- 1e-12.
                    left = None if r.deadline_s is None else round(r.deadline_s - r.received_s, 6)
                    print(json.dumps({"source": r.source, "grace_s": left}), flush=True)
                    code = 75
                    break
                print("stopping", flush=True)
                while time.monotonic() < end:  # a long flush; only a second SIGINT ends it
                    time.sleep(0.01)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        code = 130
    after = {s: signal.getsignal(s) for s in before}
    print("restored", after == before, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
