"""Self-checks tell right from wrong without revealing the answer."""

import pytest

from sgdlab.selfcheck import Verdict, answer_digest, check_choice, check_number


def test_a_number_within_the_tolerance_is_right_and_the_value_is_never_shown():
    expected = 0.7319
    right = check_number(0.75, expected, rtol=0.05)
    assert right and isinstance(right, Verdict)
    for verdict in (right, check_number(0.9, expected), check_number(0.5, expected)):
        assert "0.7319" not in verdict.message and "0.73" not in verdict.message and "0.73" not in verdict._repr_html_()


def test_a_number_outside_the_tolerance_says_which_side():
    assert not check_number(0.9, 0.7, rtol=0.1) and "too high" in check_number(0.9, 0.7, rtol=0.1).message
    assert "too low" in check_number(0.5, 0.7, rtol=0.1).message
    assert check_number(-1.04, -1.0, rtol=0.05) and not check_number(-1.2, -1.0, rtol=0.05)


def test_an_empty_or_non_numeric_answer_is_not_right_and_says_why():
    assert "still empty" in check_number(..., 1.0).message
    assert "must be a finite number" in check_number("3", 1.0).message
    assert not check_number(float("nan"), 1.0)


def test_a_choice_matches_its_digest_whatever_the_case_and_spacing():
    digest = answer_digest("sub-diffusion")
    assert check_choice("  Sub-Diffusion ", digest)
    assert not check_choice("diffusion", digest)
    assert "sub-diffusion" not in check_choice("diffusion", digest).message
    assert len(digest) == 16 and digest != answer_digest("diffusion")


def test_an_answer_outside_the_choices_is_refused_with_the_choices():
    verdict = check_choice("maybe", answer_digest("bounded"), choices=("diffusion", "sub-diffusion", "bounded"))
    assert not verdict and "not one of the choices" in verdict.message and "'bounded'" in verdict.message


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match=r"rtol must be a number in \(0, 1\), got rtol=2"):
        check_number(1.0, 1.0, rtol=2)
    with pytest.raises(ValueError, match="expected must be a finite number"):
        check_number(1.0, float("inf"))
    with pytest.raises(ValueError, match="digest must be the 16-character string"):
        check_choice("a", "abc")
