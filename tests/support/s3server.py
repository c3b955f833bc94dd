"""A real S3-protocol server on loopback: moto's standalone server in a thread.

Imported only by fixtures that need it (moto takes a second to import), so test directories
that never touch S3 never pay for it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

# Fake, distinctive credentials: tests check that they never show up in errors or logs.
ACCESS_KEY = "AKIASPOTSAFETESTKEY01"
SECRET_KEY = "spotsafe-test-secret/DoNotLeakThisValue0123456789"
REGION = "us-east-1"

_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_DEFAULT_REGION": REGION,
    # No ~/.aws files and no instance metadata: the chain must stop at the environment.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class S3Server:
    """A running server: its endpoint and a client that talks to it directly."""

    endpoint_url: str
    client: Any

    def create_bucket(self) -> str:
        """A fresh, uuid-named bucket."""
        name = f"spotsafe-test-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=name)
        return name

    def multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted."""
        uploads: list[dict[str, Any]] = self.client.list_multipart_uploads(Bucket=bucket).get(
            "Uploads", []
        )
        return uploads


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto on 127.0.0.1 and a free port; set the AWS environment for its lifetime."""
    saved = {k: os.environ.get(k) for k in [*_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(_ENV)
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; tests want failures, not access logs.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        import botocore.session

        client = botocore.session.Session().create_client(
            "s3", region_name=REGION, endpoint_url=endpoint
        )
        yield S3Server(endpoint_url=endpoint, client=client)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
