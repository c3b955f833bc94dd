"""The CLI tests use the storage tests' real S3-protocol server (moto, imported lazily)."""

from tests.storage.conftest import s3_bucket, s3_server

__all__ = ["s3_bucket", "s3_server"]
