"""Interruption handling: signals and cloud notices become one "stop requested" flag.

No torch here and no checkpoint I/O: this package only *notices*; the Guard acts on the flag
at a step boundary. Typical wiring (what the Guard does)::

    flag = StopFlag()
    with SignalCatcher(flag), NoticeWatcher(flag, watchers_from_env()) as notices:
        for batch in loader:
            train_step(batch)
            if flag.take_save_now():
                save()
            if flag.stop_requested:
                save()                  # flush the newest state
                notices.acknowledge()   # Azure: let the eviction proceed now
                sys.exit(75)
"""

from spotsafe.interrupt.aws import AwsWatcher
from spotsafe.interrupt.azure import AzureWatcher
from spotsafe.interrupt.detect import detect_cloud, watchers_from_env
from spotsafe.interrupt.gcp import GcpWatcher
from spotsafe.interrupt.request import StopFlag, StopKind, StopRequest
from spotsafe.interrupt.signals import SignalCatcher
from spotsafe.interrupt.stopfile import StopFileWatcher
from spotsafe.interrupt.watcher import NoticeWatcher, Poll, PollingWatcher, Watcher

__all__ = [
    "AwsWatcher",
    "AzureWatcher",
    "GcpWatcher",
    "NoticeWatcher",
    "Poll",
    "PollingWatcher",
    "SignalCatcher",
    "StopFileWatcher",
    "StopFlag",
    "StopKind",
    "StopRequest",
    "Watcher",
    "detect_cloud",
    "watchers_from_env",
]
