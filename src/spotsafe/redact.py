"""Redaction: secrets stay out of log lines, errors, the job record and the stored logs.

One home for every rule that removes a secret from text:

* `redact_url`, for a store URL: user-info and secret query parameters (the store
  interface re-exports it);
* `redact_text`, for any text that may carry an HTTP exchange or a credential file: the
  ``Authorization`` header, ``Credential=`` / ``Signature=``, ``X-Amz-Security-Token``,
  ``aws_secret_access_key`` / ``aws_session_token``, access key ids, URL user-info, and every
  secret value registered with `register_secret` (the resolved AWS keys and token);
* `redact_command`, for a command line kept in the job record: the values of options named
  like a secret (``--password=...``, ``--hf-token VALUE``, ``--api-key ...``), ``NAME=value``
  pairs with such names (``HF_TOKEN=...``, ``AWS_SECRET_ACCESS_KEY=...``) and URL user-info,
  in every argument (a ``sh -c '...'`` script included);
* `RedactingFilter`, a logging filter that applies `redact_text` to every record that reaches
  the handler it is installed on, whatever the logger and the level.

Over-redacting is harmless; leaking a key is not. No torch, no third-party imports.

Example:
    >>> redact_command(["train.py", "--token=hf_abc", "--lr", "3e-4", "HF_TOKEN=hf_abc"])
    ['train.py', '--token=***', '--lr', '3e-4', 'HF_TOKEN=***']
    >>> redact_text("Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/2024")
    'Authorization: ***'
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Sequence

__all__ = [
    "MASK",
    "RedactingFilter",
    "install",
    "redact_command",
    "redact_script",
    "redact_text",
    "redact_url",
    "register_environment",
    "register_secret",
]

# user@ or user:secret@ right after the scheme; a secret may contain '/' (AWS secret keys
# often do), so "user:" followed by anything up to an '@' counts too. Over-redacting a path
# that holds ':' and '@' is harmless; leaking a key is not.
_USERINFO = re.compile(r"(?<=://)(?:[^/@]+|[^@]*?:[^@]*)@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:sig|signature|token|key|secret|password|x-amz-[a-z-]+|sas)[^=]*=)[^&]*"
)


def redact_url(url: str) -> str:
    """The URL with credentials removed, safe for logs, events and errors.

    >>> redact_url("s3://AKIA:secret@bucket/run?token=abc")
    's3://***@bucket/run?token=***'
    >>> redact_url("s3://AKIA:se/cr/et@bucket/run")
    's3://***@bucket/run'
    >>> redact_url("gs://bucket/model@v2")
    'gs://bucket/model@v2'
    """
    url = _USERINFO.sub("***@", url)
    return _SECRET_QUERY.sub(r"\1***", url)


MASK = "***"

# Words that make an option or a variable name a secret's name: --db-password, --hf_token,
# --api-key, AWS_SECRET_ACCESS_KEY, WANDB_API_KEY, passwd. Case-insensitive.
_SECRET_NAME = r"[\w.-]*(?:password|passwd|token|secret|key|credential)[\w.-]*"

# A value ends at whitespace, a quote, a comma, '&' or a backslash (an escaped \r\n in a
# bytes repr, as http.client's debug output prints requests).
_VALUE = r"[^\s'\",&\\]+"

# Between a name and its value: "Name: v", "name=v", "'Name': b'v'" (a dict of bytes headers).
_SEP = r"['\"]?\s*[:=]\s*(?:(?-i:b)?['\"])?"

_TEXT_PATTERNS: tuple[re.Pattern[str], ...] = (
    # The whole header value: "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."
    # as a header line, a dict entry or inside a bytes repr of a request.
    re.compile(rf"(?i)(authorization{_SEP})[^'\"\n\\]+"),
    re.compile(rf"(?i)(x-amz-(?:security-token|credential|signature){_SEP}){_VALUE}"),
    # Credential=KEY/scope, and a request signature (replayable for its request until it
    # expires), as a query parameter, a header part or botocore's "Signature:\n<hex>".
    re.compile(rf"(?i)((?:credential|signature){_SEP}){_VALUE}"),
    re.compile(rf"(?i)(aws_(?:secret_access_key|session_token|security_token){_SEP}){_VALUE}"),
    re.compile(r"(?i)(<(?:AWSAccessKeyId|StringToSign|CanonicalRequest|SignatureProvided)>)[^<]*"),
    # AWS access key ids (long-term AKIA, temporary ASIA, and the other principal prefixes).
    re.compile(r"()(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|ABIA|ACCA)[A-Z0-9]{12,}(?![A-Z0-9])"),
)
# scheme://user:secret@host inside running text: the user-info may hold '/', not whitespace.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")

# In a command line: --secret-name=value, --secret-name value, SECRET_NAME=value.
_OPTION_EQ = re.compile(rf"(?i)^(--?{_SECRET_NAME}=).*$", re.S)
_OPTION = re.compile(rf"(?i)^--?{_SECRET_NAME}$")
_ASSIGNMENT = re.compile(rf"(?i)^({_SECRET_NAME}=).*$", re.S)
# The same shapes inside one argument that is itself a script (sh -c '... --token x ...').
_INLINE = (
    re.compile(rf"(?i)((?:^|(?<=[\s;&|('\"]))--?{_SECRET_NAME}=)[^\s'\";&|)]+"),
    re.compile(rf"(?i)((?:^|(?<=[\s;&|('\"]))--?{_SECRET_NAME}\s+)(?!-)[^\s'\";&|)]+"),
    re.compile(rf"(?i)((?:^|(?<=[\s;&|('\"]))(?:export\s+)?{_SECRET_NAME}=)[^\s'\";&|)]+"),
)

_MIN_SECRET_LEN = 8  # shorter values would blank out ordinary words; real keys are 16+
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Add a secret value that `redact_text` must remove wherever it appears.

    The S3 store registers the keys and token it resolved; the AWS keys in the environment
    are registered when this module is imported. Values shorter than 8 characters are
    ignored (they would blank out ordinary words).

    Example:
        >>> register_secret("s3cr3t-value-for-the-doctest")
        >>> redact_text("token is s3cr3t-value-for-the-doctest")
        'token is ***'
    """
    if value and len(value) >= _MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)


def _known_secrets() -> list[str]:
    with _secrets_lock:
        return sorted(_secrets, key=len, reverse=True)  # a longer secret may contain a shorter


_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
               "AWS_SECURITY_TOKEN")  # fmt: skip


def register_environment() -> None:
    """Register the AWS keys and token found in the environment now (see `register_secret`)."""
    for name in _SECRET_ENV:
        register_secret(os.environ.get(name))


register_environment()


def redact_text(text: str) -> str:
    """`text` with every known secret value and every secret-shaped string masked.

    Example:
        >>> redact_text("{'X-Amz-Security-Token': b'FwoGZXIvYXdzEJr'}")
        "{'X-Amz-Security-Token': b'***'}"
        >>> redact_text("GET https://user:pa55@example.com/x")
        'GET https://***@example.com/x'
    """
    for secret in _known_secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    if "://" in text:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group()), text)
    return text


def redact_script(script: str) -> str:
    """A shell script or one-line command with secret-named options and variables masked.

    Example:
        >>> redact_script("curl -H 'Authorization: Bearer abc' --token t0k https://h/x")
        "curl -H 'Authorization: ***' --token *** https://h/x"
    """
    for pattern in _INLINE:
        script = pattern.sub(lambda m: m.group(1) + MASK, script)
    return redact_text(script)


def _redact_argument(arg: str) -> str:
    m = _OPTION_EQ.match(arg) or _ASSIGNMENT.match(arg)
    if m:
        return m.group(1) + MASK  # the whole value, spaces included: it is one argument
    return redact_script(arg)


def redact_command(argv: Sequence[str]) -> list[str]:
    """The command line with the values of secret-named options and variables masked.

    ``--token VALUE`` masks VALUE unless it looks like the next option (``--...``); the
    argument after ``-c`` (``sh -c SCRIPT``, ``python -c CODE``) is read as a script.

    Example:
        >>> redact_command(["python", "t.py", "--db-password", "hunter22", "--lr", "1"])
        ['python', 't.py', '--db-password', '***', '--lr', '1']
        >>> redact_command(["sh", "-c", "HF_TOKEN=hf_x python t.py --api-key k1"])
        ['sh', '-c', 'HF_TOKEN=*** python t.py --api-key ***']
    """
    out: list[str] = []
    previous = ""
    for arg in argv:
        if _OPTION.match(previous) and not arg.startswith("--"):
            out.append(MASK)
        elif previous == "-c":
            out.append(redact_script(arg))
        else:
            out.append(_redact_argument(arg))
        previous = arg
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it sees (message, arguments,
    traceback). Install it on a *handler*, so that it covers every logger that reaches it.

    Example:
        >>> import logging, io
        >>> stream = io.StringIO()
        >>> handler = logging.StreamHandler(stream)
        >>> handler.addFilter(RedactingFilter())
        >>> logger = logging.getLogger("spotsafe.doctest.redact")
        >>> logger.addHandler(handler)
        >>> logger.warning("headers %s", {"Authorization": "AWS4 Credential=AKIAX"})
        >>> stream.getvalue()
        "headers {'Authorization': '***'}\\n"
        >>> logger.removeHandler(handler)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it (handleError)
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install(handlers: Iterable[logging.Handler]) -> None:
    """Add one `RedactingFilter` to each handler that has none yet."""
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
