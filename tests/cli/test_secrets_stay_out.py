"""No credential reaches an output or the store: the CLI at -vv against the real S3-protocol
server with a session token set (third-party debug output asked for by name included), and
`spotsafe run` with a secret-bearing command line. Every line printed and every object in
the store is searched for every secret value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.supervisor.conftest import REPO, child_env, write_pool
from tests.support.s3server import ACCESS_KEY, SECRET_KEY, S3Server

SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONtokenDoNotLeak0123456789+/abcd"
# Secrets on the training command line, each in one of the shapes people use.
PASSWORD = "pw-DoNotLeak-7f3a9c"  # --db-password=...
TOKEN = "tok-DoNotLeak-51be2d"  # --api-token VALUE
HF_TOKEN = "hf_DoNotLeakHuggingFace42"  # HF_TOKEN=... inside a sh -c script
AWS_VALUE = "awsval-DoNotLeak-0c1d"  # AWS_SECRET_ACCESS_KEY=... as an argument
URL_SECRET = "urlpass-DoNotLeak-99"  # https://user:...@host
SECRETS = [ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, PASSWORD, TOKEN, HF_TOKEN, AWS_VALUE,
           URL_SECRET]  # fmt: skip

CHILD_SCRIPT = (
    f'HF_TOKEN={HF_TOKEN} exec "$0" -m tests.supervisor.scripted_child ckpt:5,exit:75 exit:0'
)
COMMAND = [
    "sh", "-c", CHILD_SCRIPT, sys.executable, f"--db-password={PASSWORD}", "--api-token", TOKEN,
    f"AWS_SECRET_ACCESS_KEY={AWS_VALUE}", f"--resume-from=https://me:{URL_SECRET}@example.com/x",
]  # fmt: skip


def spotsafe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = child_env(AWS_SESSION_TOKEN=SESSION_TOKEN)
    environment.pop("SPOTSAFE_DEBUG_LOGGERS", None)
    environment.update(env)
    return subprocess.run([sys.executable, "-m", "spotsafe.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=environment, timeout=120)  # fmt: skip


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def stored_objects(server: S3Server, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in server.client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: server.client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> str:
    """A job run to success under `spotsafe -vv run` with the secret-bearing command."""
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint_url
    url = f"s3://{s3_bucket}/runs/secret-job"
    config = write_pool(tmp_path / "spotsafe.toml")
    done = spotsafe("-vv", "run", "--store", url, "--config", str(config), "--pool", "fast",
                    "--", *COMMAND)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "attempt 2 ended: success" in done.stderr  # -vv did show spotsafe's own lines
    assert leaks(done.stdout + done.stderr) == []
    return url


def test_the_store_keeps_no_secret(store: str, s3_server: S3Server, s3_bucket: str) -> None:
    objects = stored_objects(s3_server, s3_bucket)
    assert any(k.endswith("000001-start.json") for k in objects)
    for key, body in objects.items():
        text = body.decode("utf-8", errors="replace")
        assert leaks(text) == [], key
    start = next(v for k, v in objects.items() if k.endswith("000001-start.json"))
    # The command line is kept, redacted: what ran is still readable.
    assert json.loads(start)["info"]["command"] == [
        "sh", "-c", CHILD_SCRIPT.replace(HF_TOKEN, "***"), sys.executable, "--db-password=***",
        "--api-token", "***", "AWS_SECRET_ACCESS_KEY=***",
        "--resume-from=https://***@example.com/x",
    ]  # fmt: skip


def test_ls_at_debug_verbosity_prints_no_credential(store: str) -> None:
    done = spotsafe("-vv", "ls", store)
    assert done.returncode == 0, done.stderr
    assert "5" in done.stdout.split()  # the checkpoint at step 5 is listed
    assert leaks(done.stdout + done.stderr) == []
    # Third-party loggers stay quiet unless asked for by name.
    assert "botocore" not in done.stderr and "urllib3" not in done.stderr


def test_third_party_debug_output_asked_for_by_name_is_redacted(store: str) -> None:
    done = spotsafe("-vv", "--debug-logger", "botocore", "ls", store,
                    SPOTSAFE_DEBUG_LOGGERS="urllib3,s3fs")  # fmt: skip
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "DEBUG botocore" in err and "DEBUG urllib3" in err  # it is shown...
    assert "Authorization" in err and "X-Amz-Security-Token" in err.replace("x-amz-s", "X-Amz-S")
    assert leaks(done.stdout + err) == []  # ...without the key id, the token or a signature
