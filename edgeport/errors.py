"""The one error type users see: a problem and the fix, printed as one line by the CLI (exit 1)."""

from __future__ import annotations


class EdgeportError(Exception):
    """A user-facing failure: bad input, a model edgeport cannot handle, a missing tool.

    `problem` says what is wrong, `fix` what the user can do about it. Anything else that escapes
    is an internal error (exit 2).
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix.rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        if not self.fix:
            return f"{self.problem}."
        return f"{self.problem}. {self.fix[0].upper()}{self.fix[1:]}."


def exception_line(exc: BaseException) -> str:
    """`Type: first line of the message` (at most 200 characters): a third-party error in one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
