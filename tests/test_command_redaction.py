"""Whole command lines (opted in) lose their secrets before they are stored or sent."""

from __future__ import annotations

import pytest

from sb_otel._tracking.command_redaction import MASK, redact_command_line


@pytest.mark.parametrize(
    ("line", "kept", "secret"),
    [
        pytest.param("curl -H 'Authorization: Bearer s3cr3tvalue' https://x", "curl -H", "s3cr3tvalue", id="bearer"),
        pytest.param("mysql --password=hunter22 db", "mysql --password=", "hunter22", id="password-option"),
        pytest.param("tool --api-key abcdef123 run", "tool --api-key", "abcdef123", id="key-option-spaced"),
        pytest.param(
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI make deploy", "AWS_SECRET_ACCESS_KEY=", "wJalrXUtnFEMI", id="env"
        ),
        pytest.param("git clone https://me:pa55word@github.com/x", "git clone https://me:", "pa55word", id="url"),
        pytest.param("echo ghp_0123456789abcdefghijABCDEFGHIJ", "echo", "ghp_0123456789", id="github-token"),
        pytest.param("aws --profile x AKIAIOSFODNN7EXAMPLE", "aws --profile x", "AKIAIOSFODNN7EXAMPLE", id="aws-key"),
        pytest.param(
            "http x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N", "http x", "eyJ", id="jwt"
        ),
    ],
)
def test_secrets_are_masked_and_the_rest_of_the_line_kept(line: str, kept: str, secret: str) -> None:
    redacted = redact_command_line(line)
    assert secret not in redacted
    assert MASK in redacted
    assert redacted.startswith(kept)


def test_a_line_without_secrets_is_unchanged() -> None:
    assert redact_command_line("git status --short | head -n 3") == "git status --short | head -n 3"
