"""What every bad-input CLI test asserts: a non-zero exit and one line naming the problem, no traceback."""

from __future__ import annotations


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    for word in words:
        assert word in lines[0], lines[0]
