"""Redaction (spotsafe.redact): every secret shape a log line, an error or a kept command
line may carry is masked, by any logger at any level, and ordinary text stays readable."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotsafe.redact import (
    RedactingFilter,
    redact_command,
    redact_script,
    redact_text,
    register_secret,
)

# Secret-looking values: what keys, tokens and passwords are made of.
secrets = st.text(
    alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="+/=_-"),
    min_size=12,
    max_size=40,
).filter(lambda s: not s.startswith("-"))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--password=hunter2!", "--lr=3e-4"], ["--password=***", "--lr=3e-4"]),
        (["--hf-token", "hf_abc", "--epochs", "3"], ["--hf-token", "***", "--epochs", "3"]),
        (["--api_key", "--verbose"], ["--api_key", "--verbose"]),  # a flag, not a value
        (["--db-secret=a b c"], ["--db-secret=***"]),
        (["HF_TOKEN=hf_x", "WANDB_API_KEY=abc", "EPOCHS=3"],
         ["HF_TOKEN=***", "WANDB_API_KEY=***", "EPOCHS=3"]),
        (["AWS_SECRET_ACCESS_KEY=wJalr/K7"], ["AWS_SECRET_ACCESS_KEY=***"]),
        (["--data", "s3://AKIAXX:se/cr/et@bucket/run"], ["--data", "s3://***@bucket/run"]),
        (["bash", "-c", "export HF_TOKEN=x1; python t.py --token t2 --lr 1"],
         ["bash", "-c", "export HF_TOKEN=***; python t.py --token *** --lr 1"]),
        (["python", "train.py", "--lr", "3e-4"], ["python", "train.py", "--lr", "3e-4"]),
    ],
)  # fmt: skip
def test_command_lines(argv: list[str], expected: list[str]) -> None:
    assert redact_command(argv) == expected


@settings(max_examples=100, deadline=None)
@given(secrets, st.sampled_from(["--token", "--db-password", "--api-key", "--client-secret"]))
def test_no_secret_value_survives_a_command_line(secret: str, option: str) -> None:
    shapes = [
        [f"{option}={secret}"],
        [option, secret],
        [f"MY_TOKEN={secret}"],
        ["sh", "-c", f"{option} {secret} && HF_TOKEN={secret} run"],
        [f"https://user:{secret}@host/x"],
    ]
    for argv in shapes:
        assert secret not in " ".join(redact_command(argv)), argv


BOTOCORE_LINES = [
    "Sending http request: <AWSPreparedRequest headers={'X-Amz-Date': b'20260101T000000Z', "
    "'X-Amz-Security-Token': b'{token}', 'Authorization': b'AWS4-HMAC-SHA256 "
    "Credential={key}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=ab12'}>",
    "CanonicalRequest:\nGET\n/b\n\nhost:127.0.0.1\nx-amz-security-token:{token}\n",
    "send: b'GET /b HTTP/1.1\\r\\nAuthorization: AWS4-HMAC-SHA256 Credential={key}/x\\r\\n'",
    "https://s3.amazonaws.com/b/k?X-Amz-Credential={key}%2F2026&X-Amz-Security-Token={token}",
    "[default]\naws_secret_access_key = {secret}\naws_session_token={token}",
    "<Error><AWSAccessKeyId>{key}</AWSAccessKeyId><StringToSign>{secret}</StringToSign></Error>",
    "could not connect to https://admin:{secret}@minio.local:9000/bucket",
]


@pytest.mark.parametrize("line", BOTOCORE_LINES)
def test_http_and_credential_file_shapes(line: str) -> None:
    key, secret, token = "ASIAEXAMPLEKEYID0001", "wJalrXUtnFEMI/K7MDENG+bPx", "FwoGZXIvYXdzE+/xyz="
    text = line.replace("{key}", key).replace("{secret}", secret).replace("{token}", token)
    out = redact_text(text)
    assert key not in out and secret not in out and token not in out, out
    assert "***" in out


def test_ordinary_text_is_left_alone() -> None:
    texts = [
        "attempt 2 ended: success (exit 0), steps 5 -> 20",
        "list s3://bucket/run/checkpoints: 3 objects",
        "Calculating signature using v4",
    ]
    for text in texts:
        assert redact_text(text) == text


def test_registered_values_are_masked_anywhere() -> None:
    register_secret("a-resolved-session-token-from-imds")
    assert redact_text("token a-resolved-session-token-from-imds.") == "token ***."
    register_secret("short")  # too short: would blank out words
    assert redact_text("a short word") == "a short word"


def test_scripts_keep_their_shape() -> None:
    assert redact_script("curl -H 'Authorization: Bearer x' -d token=y https://h") == (
        "curl -H 'Authorization: ***' -d token=*** https://h"
    )


def test_the_filter_covers_every_logger_message_args_and_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    third_party = logging.getLogger("botocore.spotsafe-test")
    old_level = third_party.level
    third_party.setLevel(logging.DEBUG)
    try:
        third_party.debug("headers %s", {"Authorization": "AWS4 Credential=AKIAABCDEFGHIJKLMNOP/x"})
        try:
            raise RuntimeError("GET https://u:pass-in-url-123@host/x failed")
        except RuntimeError:
            logging.getLogger("spotsafe.test").exception("request failed")
    finally:
        root.removeHandler(handler)
        third_party.setLevel(old_level)
    out = stream.getvalue()
    assert "AKIAABCDEFGHIJKLMNOP" not in out and "pass-in-url-123" not in out
    assert "botocore.spotsafe-test headers {'Authorization': '***'}" in out
    assert "RuntimeError: GET https://***@host/x failed" in out
