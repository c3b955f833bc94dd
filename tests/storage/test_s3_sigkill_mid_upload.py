"""SIGKILL in the middle of a multipart upload to a real S3 server leaves no valid-looking
checkpoint: a reader sees an older committed one, whole."""

from __future__ import annotations

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


def open_uploads(server: S3Server, bucket: str) -> set[str]:
    return {u["UploadId"] for u in server.multipart_uploads(bucket)}


@pytest.mark.slow
def test_sigkill_mid_multipart_upload(s3_server: S3Server, s3_bucket: str) -> None:
    store = f"s3://{s3_bucket}/run"
    last = 0
    landed = 0
    for _ in range(6):  # up to 6 savers; a kill can race the upload it aimed at
        proc = start_saver(store, "--big")
        orphans = open_uploads(s3_server, s3_bucket)  # left open by earlier kills
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The kill point: a save of this saver has an upload open on the server, after
            # it has committed at least once (so the reader has something to fall back to).
            if (
                committed(s3_server, s3_bucket) > last
                and open_uploads(s3_server, s3_bucket) - orphans
            ):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        landed += bool(open_uploads(s3_server, s3_bucket) - orphans)
        step = check_reader_view(store, big=True)
        assert step > last, "the saver never committed before it was killed"
        last = step
        if landed == 3:
            break
    assert landed == 3, f"only {landed} kills landed in an open multipart upload"
