"""SIGKILL in the middle of a multipart upload to a real S3 server leaves no valid-looking
checkpoint: a reader sees an older committed one, whole."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.checkpoint.test_commit_is_atomic import check_reader_view, start_saver
from tests.support.s3server import S3Server


def committed(server: S3Server, bucket: str) -> int:
    """The newest step with a committed manifest (0 if none)."""
    listed = server.client.list_objects_v2(Bucket=bucket, Prefix="run/checkpoints/")
    steps = [
        int(o["Key"].split("/")[2].split("-")[1])
        for o in listed.get("Contents", [])
        if o["Key"].endswith("MANIFEST.json")
    ]
    return max(steps, default=0)


@pytest.mark.slow
def test_sigkill_mid_multipart_upload(s3_server: S3Server, s3_bucket: str) -> None:
    store = f"s3://{s3_bucket}/run"
    rng = random.Random(99)  # reproducible kill points
    last = 0
    for _ in range(3):
        proc = start_saver(store, "--big")
        deadline = time.monotonic() + 60
        while committed(s3_server, s3_bucket) <= last and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for this saver's first commit, then kill it mid-upload
        time.sleep(rng.uniform(0.1, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        step = check_reader_view(store, big=True)
        assert step > last, "the saver never committed before it was killed"
        last = step
    assert last > 0, "no save ever committed: kill points too early"
    # Uploads cut short by SIGKILL stay open on the server (a bucket lifecycle rule cleans
    # them up): proof that kills landed mid-multipart, and that none of them became an object.
    assert s3_server.multipart_uploads(s3_bucket), "no kill landed in a multipart upload"
