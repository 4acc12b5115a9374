"""Self-checks for exercises: tell a student whether an answer is right without showing it.

Two kinds of answer:

* a number that the notebook can compute (a measured distance, a share of seeds):
  :func:`check_number` compares the student's value with the notebook's own, to a stated
  relative tolerance, and says right, too high or too low, never the value itself;
* a choice or a word (``"sub-diffusion"``, ``"B = 1000"``): :func:`check_choice` compares
  a salted SHA-256 digest of the normalised answer (lower case, inner spaces collapsed) with the
  digest printed in the exercise, so that the page does not spell out the answer.
  :func:`answer_digest` makes the digest for a new exercise.

Both return a :class:`Verdict`, which displays as one line and is truthy when right, so a
cell can also ``assert`` it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers

SALT = "sgdlab-exercise:"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of a self-check: ``right``, and a message that does not reveal the answer."""

    right: bool
    message: str

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return self.message

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.right else "#b35900"
        return f'<p class="sgdlab-selfcheck" style="color:{colour};font-weight:bold">{self.message}</p>'


def check_number(answer, expected, *, rtol: float = 0.05, name: str = "your answer") -> Verdict:
    """Is ``answer`` within ``rtol`` (relative) of ``expected``? Says right, too high or too low.

    ``expected`` is the notebook's own value; it is never printed. ``name`` is how the
    message refers to the answer.
    """
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0 < rtol < 1:
        raise ValueError(f"rtol must be a number in (0, 1), got rtol={rtol!r}")
    if isinstance(expected, bool) or not isinstance(expected, numbers.Real) or not math.isfinite(expected):
        raise ValueError(f"expected must be a finite number, got expected={expected!r}")
    if answer is None or answer is ...:
        return Verdict(False, f"{name} is still empty: replace the ... with a number, then run the cell again.")
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real) or not math.isfinite(answer):
        return Verdict(False, f"{name} must be a finite number, got {answer!r}.")
    if abs(answer - expected) <= rtol * abs(expected):
        return Verdict(True, f"Right: {name} is within {rtol:.0%} of the value this notebook measured.")
    side = "too high" if answer > expected else "too low"
    return Verdict(False, f"Not yet: {name} is {side} by more than {rtol:.0%}. Look again at the figure and the "
                          f"numbers above.")


def _normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def answer_digest(answer: str) -> str:
    """The digest :func:`check_choice` compares against: salted SHA-256 of the normalised answer (hex, 16 characters)."""
    return hashlib.sha256((SALT + _normalise(answer)).encode()).hexdigest()[:16]


def check_choice(answer, digest: str, *, choices: tuple[str, ...] | None = None, name: str = "your answer") -> Verdict:
    """Is ``answer`` the one whose :func:`answer_digest` is ``digest``?

    ``choices``, when given, lists the allowed answers: an answer outside them is refused
    with the list, not counted wrong. Case and spacing do not matter.
    """
    if not isinstance(digest, str) or len(digest) != 16:
        raise ValueError(f"digest must be the 16-character string answer_digest gives, got digest={digest!r}")
    if answer is None or answer is ...:
        return Verdict(False, f"{name} is still empty: replace the ... with your answer, then run the cell again.")
    if choices is not None and _normalise(answer) not in {_normalise(c) for c in choices}:
        return Verdict(False, f"{name} {answer!r} is not one of the choices: {', '.join(map(repr, choices))}.")
    if answer_digest(answer) == digest:
        return Verdict(True, f"Right: {answer!r} is the answer.")
    return Verdict(False, f"Not yet: {answer!r} is not the answer. Look again at the figure and the numbers above.")
