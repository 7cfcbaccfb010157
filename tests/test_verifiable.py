"""Verifiable rewards: answer extraction, maths equivalence, multiple choice, format, rewards."""

import pytest
import torch

from genrl.registry import REWARDS
from rewards.verifiable import (
    AccuracyReward,
    FormatReward,
    VerifiableReward,
    extract_answer,
    format_ok,
    is_equivalent,
    match_choice,
)

# ----------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),  # nested braces
        (r"\boxed{{a}+{b}}", "{a}+{b}"),
        (r"first \boxed{1}, finally \boxed{2}", "2"),  # last boxed wins
        ("<answer> 42 </answer>", "42"),  # answer tags, stripped
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # last tag wins
        (r"<answer>it is \boxed{7} cm</answer>", "7"),  # boxed inside answer tags
        ("< answer >9</ answer >", "9"),  # spaces inside tag names
        (r"\boxed{12", None),  # unclosed brace
        (r"\boxed{5} and then \boxed{12", None),  # the last box is unclosed
        ("<answer>3", None),  # unclosed tag
        (r"\boxed{}", None),
        ("<answer>  </answer>", None),
        ("", None),
        ("The answer is seven.", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_long_garbage_is_handled():
    garbage = "\\boxed{" * 50_000 + "{" * 50_000 + "<answer>" * 10_000 + "x^{" * 10_000
    assert extract_answer(garbage) is None
    assert format_ok("<think>" + garbage) is False
    assert is_equivalent(garbage, "1") is False
    assert is_equivalent("1," * 100_000 + "1", "1") is False
    assert match_choice(garbage, "A") is False


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize(
    "pred, gold",
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\frac{1}{2}", "1/2"),
        ("1/2", "0.5"),
        (r"\dfrac{3}{4}", "0.75"),
        ("1,000", "1000"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        ("x^2+2x+1", "(x+1)^2"),
        ("$7$.", "7"),
        (r"\text{7}", "7"),
        ("3.0", "3"),
        ("1e3", "1000"),
        ("50%", "50"),  # PRM800K/MathRuler drop the % sign
        (r"12\text{ cm}", "12"),
        (r"45^\circ", "45"),
        ("x = 3", "3"),
        (r"\left(\frac{1}{2}\right)", "0.5"),
        (r"\sqrt[3]{8}", "2"),
        (r"\pi r^2", r"r^2 \pi"),
        (r"3 \times 10^{3}", "3000"),
        (r"\sin(\pi/6)", r"\frac12"),
        (r"\sqrt{2}", "1.4142136"),  # closed form vs decimal within 1e-6
        (r"-\frac{1}{2}", "-0.5"),
        (7, "7"),  # non-string gold from a dataset
        # kinds a break-test found wrong: mixed numbers (read as products, spaces deleted)
        (r"2\frac{1}{2}", "5/2"),
        ("2 1/2", "5/2"),
        (r"3\tfrac14", "3.25"),
        (r"-2\frac{1}{2}", "-2.5"),
        (r"1\frac{1}{2}\text{ cups}", r"\frac{3}{2}"),
        # ... normalisation that mangled right answers
        ("(1, 100)", "(1,100)"),  # a comma in a tuple is no thousands separator
        (r"\{1, 100\}", r"\{1,100\}"),
        ("1{,}000", "1000"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),  # a row break is kept
        (r"5\text{cm}", "5"),
        ("5cm", "5"),
        (r"12\mathrm{m}^2", "12"),
        (r"\text{\frac12}", "0.5"),
        ("{1,2}", r"\{1,2\}"),
        (r"3 \text{ and } 4", "3, 4"),
        (r"(\frac12, 3)", "(0.5, 3)"),  # tuples item by item
        ("2, 1", "1, 2"),  # a bare list of answers in any order
        (r"\{2, 1\}", r"\{1, 2\}"),
        ("Yes", "yes"),
        ("2\u03c0", r"2\pi"),
        ("\u221e", r"\infty"),
        ("\u22125", "-5"),
        ("10 percent", r"10\%"),
        (r"x \in [1, 2]", "[1,2]"),
        ("**7**", "7"),
        ("2^{100}", "1267650600228229401496703205376"),  # refused before: exponent over 64
        ("0.333333", "1/3"),  # six significant digits, correctly rounded, of a non-terminating value
        # a second break-test: parsing
        (r"2\sin x\cos x", r"\sin 2x"),  # a bracketless argument is one term
        (r"\sin x \cdot y", r"y\sin x"),
        (r"2\cdot\sqrt{3}", r"2\sqrt3"),
        (r"2\lambda", r"\lambda+\lambda"),
        ("x_1+x_2", "x_2+x_1"),
        ("e^{2}", "7.389056"),  # Euler's number before a power
        ("10!", "3628800"),
        ("\u221a2", r"\sqrt{2}"),
        ("3\u00d74", "12"),
        ("\u00bd", "0.5"),
        ("\u20135", "-5"),
        ("2 million", "2000000"),
        # ... units spelled two ways, and thousands, prefixes and equations
        ("5 minutes", "5 min"),
        ("5 meters", "5 m"),
        ("5 cm", "5 centimeters"),
        ("10 hrs", "10 hours"),
        ("1,000 cm", "1000"),
        ("x=1,000", "1000"),
        (r"4\pi cm^2", r"4\pi"),
        ("AB = 5", "5"),
        (r"x\in[2,\infty)", r"[2,\infty)"),
        (r"x \ge 2", r"x \geq 2"),
        ("x^2+y^2=1", "y^2+x^2=1"),
        (r"\pm 2", "2, -2"),
        ("percent", "percent"),
    ],
)
def test_equivalent(pred, gold):
    assert is_equivalent(pred, gold)
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("0.5", "0.51"),
        ("x+1", "x-1"),
        ("12", "21"),
        ("50%", "0.5"),  # conservative: percent is not divided by 100
        ("1,2", "12"),  # not a thousands separator
        (r"2^{2^{100}}", "1"),  # refused before evaluation, not computed
        ("__import__('os').system('true')", "0"),  # never evaluated
        (r"\frac{1}{0}", "1"),
        ("", ""),
        (None, "1"),
        ("x^", "x"),
        (r"\sqrt", "2"),
        # kinds a break-test found wrong: infinity and overflow equal to every number
        (r"\infty", "5"),
        (r"\infty", "0"),
        (r"\infty", r"\frac34"),
        (r"-\infty", r"2\sqrt3"),
        (r"\infty", r"-\infty"),
        (r"(10^{60})^{6}", "42"),
        ("1e400", "2e400"),
        ("1e-400", "0"),
        # ... a relative tolerance that passed wrong answers
        ("1000001", "1000000"),
        ("3628801", "3628800"),
        ("1073741823", "2^{30}"),
        ("12345678901234567891", "12345678901234567890"),
        ("0.333", "1/3"),  # too few digits to stand for 1/3
        ("3.14", r"\pi"),
        # ... words handed to sympy as products of letters
        ("integral", "triangle"),
        ("silent", "listen"),
        ("felt", "left"),
        # ... mixed numbers and deleted spaces
        (r"1\frac{1}{2}", r"\frac12"),
        (r"2\frac12", "1"),
        ("2 1/2", "10.5"),
        ("2 3", "23"),
        # ... units and variables stripped on both sides
        ("5 s", "5 min"),
        (r"\frac32", r"\frac{3}{2} g"),  # g may be gravity here, not grams
        ("x=3", "y=3"),
        # ... lists and symbols
        ("(2, 1)", "(1, 2)"),  # tuples keep their order
        ("(1,2)", "(1,2]"),
        ("1100", "(1,100)"),
        (r"\sqrt{x^2}", "x"),  # not for negative x
        # a second break-test: tiny values within an absolute tolerance, big ones to 30 digits only
        (r"10^{-35}", "0"),
        (r"9.11 \times 10^{-31}", r"9.10 \times 10^{-31}"),
        ("2^{-100}", "2^{-101}"),
        (r"x \cdot 10^{-40}", r"2x \cdot 10^{-40}"),
        ("2^{100}-1", "2^{100}"),
        ("10^{40}+1", "10^{40}"),
        ("(2^{100}-1, 0)", "(2^{100}, 0)"),
        # ... a fourth symbol given the first one's value, and signs shared by all symbols
        ("a+b+c+d", "2a+b+c"),
        ("w+x+y-z", "x+y"),
        (r"\sqrt{x^2y^2}", "xy"),
        (r"\frac{\sqrt{x^2}}{\sqrt{y^2}}", "x/y"),
        # ... parsing
        (r"\sin x \cos x", r"\sin(x\cos x)"),
        (r"\sin^{-1} x", r"\frac{1}{\sin x}"),  # arcsin, not a reciprocal
        # ... units: powers and short plurals
        ("5 cm^2", "5 cm^3"),
        ("5 m^2", "5 m"),
        ("5 ms", "5 m"),
        ("x^2+y^2=1", "x^2+y^2=2"),
    ],
)
def test_not_equivalent(pred, gold):
    assert not is_equivalent(pred, gold)
    assert not is_equivalent(gold, pred)


@pytest.mark.parametrize(
    "pred, gold",
    [
        (r"((((10^{60})^{60})^{60})^{60})", "1"),  # a power tower under the old exponent limit: 13-22 s
        (r"\frac{(x+y+1)^{20}}{(x-y+2)^{20}}", "x"),  # simplify(a - b) took 25 s
        ("(a+b+c)^{20}", "(a+b+c+1)^{20}"),
        ("1" * 400 + "/" + "1" * 400 + "x", "1"),  # cubic backtracking in the number pattern
        ("2^" + " " * 40_000 + "x", "1"),  # quadratic regexes on long runs of spaces
        ("answer" + " " * 50_000 + "!", "A"),
        (" " * 20_000 + "percent", "1"),
        ("10^{x^{20}}", "1"),  # a symbol in an exponent: 28 s and 590 MB
        ("2^{x^{30}}", "2^{x^{30}}+1"),
        ("1e9999999", "1"),  # a huge e-notation exponent built before the size check: 30 s
        ("1.5e-9999999", "0"),
        ("(" * 1000 + "x" * 20_000 + ")" * 1000, "x"),  # deep brackets rescanned per level
        ("(" * 20_000 + "1" + ")" * 20_000, "2"),
        ("3000!", "1"),
    ],
)
def test_inputs_that_hung_are_answered(pred, gold):
    """Each took seconds to minutes before (a break-test's cases); each is refused or decided at
    once now. Not timed here: a regression shows as a hung test."""
    assert not is_equivalent(pred, gold) and not match_choice(pred, gold)
    assert format_ok("<" + " " * 20_000 + "think>") is False


# ----------------------------------------------------------------------------- multiple choice

CHOICES = {"A": "triangle", "B": "square", "C": "0.5", "D": "circle"}


@pytest.mark.parametrize(
    "pred, gold, choices, expected",
    [
        ("B", "B", None, True),
        ("(B)", "B", None, True),
        ("B.", "B", None, True),
        ("B) square", "B", None, True),
        ("The answer is B", "B", None, True),
        ("The final answer is: (c)", "C", None, True),
        ("the answer is b.", "B", None, True),
        ("b", "B", None, True),
        ("B", "(B)", None, True),
        ("square", "B", CHOICES, True),  # option text
        ("Square.", "B", CHOICES, True),
        ("1/2", "C", CHOICES, True),  # option text, maths-equivalent
        ("B", "square", CHOICES, True),  # gold given as option text
        ("A", "B", None, False),  # wrong letter
        ("(C)", "B", CHOICES, False),
        ("circle", "B", CHOICES, False),
        ("the answer is a triangle", "A", None, False),  # "a" is an article here
        ("", "A", None, False),
        ("**B**", "B", None, True),
        # hedging names no answer (the reward hack of Visual-RFT issue #79)
        ("(A) or (B)", "A", None, False),
        ("The answer is A or B", "A", None, False),
        ("A. 10, B. 12", "A", ["10", "12", "14", "16"], False),
        ("(A) 10 (B) 12 (C) 14 (D) 16", "A", ["10", "12", "14", "16"], False),
        ("A/B", "A", None, False),
        ("a", "B", {"A": "2a", "B": "a"}, True),  # an option's own text, not the letter A
        ("The answer is I think B", "B", ["1", "2"], True),  # "I" is no option letter here
        ("(a) or (b)", "A", None, False),
        ("a) or b)", "A", None, False),
        ("The answer is A or possibly B", "A", None, False),
        ("answer: A, possibly B", "A", None, False),
        ("A. Also possibly B.", "A", None, False),
        ("A good choice is B", "B", ["1", "2", "3", "4"], True),  # the article "A" names no option
    ],
)
def test_match_choice(pred, gold, choices, expected):
    assert match_choice(pred, gold, choices) is expected


def test_choices_as_list():
    assert match_choice("square", "B", ["triangle", "square"])


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"<think>2+2=4</think> so \boxed{4}", True),
        ("<think>2+2=4</think>\n<answer>4</answer>", True),
        ("  <think>\nr\n</think>\n\n<answer>4</answer>\n", True),
        (r"<think>r</think><answer>\boxed{4}</answer>", True),
        (r"<think></think>\boxed{4}", True),  # empty reasoning passes, as in EasyR1
        (r"\boxed{4}", False),  # no think block
        (r"r</think>\boxed{4}", False),  # think not opened
        (r"<think>r \boxed{4}</think>", False),  # answer inside the think block only
        ("<think>r</think>", False),  # no answer
        ("<think>r</think><answer>4</answer> more text", False),  # text after the answer tag
        (r"<think>a</think><think>b</think>\boxed{4}", False),  # two think blocks
        ("<think>r</think><answer></answer>", False),  # empty answer
        (r"<think>r</think>\boxed{4", False),  # unclosed box
        ("<think>r</think><answer>1</answer><answer>2</answer>", False),
    ],
)
def test_format_ok(text, expected):
    assert format_ok(text) is expected


# ----------------------------------------------------------------------------- rewards


def test_registered_and_constructible_without_arguments():
    for name, cls in [("accuracy", AccuracyReward), ("format", FormatReward), ("verifiable", VerifiableReward)]:
        assert REWARDS.get(name) is cls
        cls()
    with pytest.raises(TypeError):
        VerifiableReward(0.5)  # keyword-only
    with pytest.raises(ValueError):
        VerifiableReward(format_weight=1.5)


SAMPLES = [
    r"<think>half</think> \boxed{\frac{1}{2}}",  # right, formatted
    r"the answer is \boxed{0.5}",  # right, unformatted
    "<think>hmm</think><answer>B</answer>",  # wrong choice, formatted
    "<think>hmm</think> I give up",  # no answer, unformatted
    "<think>x</think><answer>(x+1)^2</answer>",  # right symbolic, formatted
    "<think>t</think><answer>Paris</answer>",  # right text, formatted
]
META = [
    {"answer": "0.5"},
    {"answer": r"\frac{1}{2}", "answer_type": "numeric"},
    {"answer": "C", "choices": {"A": "1", "B": "2", "C": "3"}},
    {"answer": "4"},
    {"answer": "x^2+2x+1", "answer_type": "symbolic"},
    {"answer": "paris", "answer_type": "text"},
]
PROMPTS = ["q"] * len(SAMPLES)


def test_accuracy_reward():
    out = AccuracyReward()(SAMPLES, PROMPTS, META)
    assert set(out) == {"accuracy"}
    acc = out["accuracy"]
    assert acc.shape == (len(SAMPLES),) and acc.dtype == torch.float32
    assert acc.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_format_reward():
    fmt = FormatReward()(SAMPLES, PROMPTS, META)["format"]
    assert fmt.shape == (len(SAMPLES),) and fmt.dtype == torch.float32
    assert fmt.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("weight", [0.1, 0.5])
def test_verifiable_weighting(weight):
    reward = VerifiableReward() if weight == 0.1 else VerifiableReward(format_weight=weight)
    out = reward(SAMPLES, PROMPTS, META)
    assert set(out) == {"verifiable", "accuracy", "format"}
    for v in out.values():
        assert v.shape == (len(SAMPLES),) and v.dtype == torch.float32
    expected = (1 - weight) * out["accuracy"] + weight * out["format"]
    torch.testing.assert_close(out["verifiable"], expected)
    torch.testing.assert_close(out["verifiable"][:4], torch.tensor([1.0, 1 - weight, weight, 0.0]))


def test_the_answer_block_wins_over_a_box_in_the_reasoning():
    """The format rule reads <answer>; accuracy read a \\boxed{} inside <think> instead."""
    assert extract_answer(r"<think>maybe \boxed{3}?</think><answer>5</answer>") == "5"
    out = AccuracyReward()(
        [r"<think>maybe \boxed{3}?</think><answer>5</answer>", r"<think>\boxed{5}</think><answer>3</answer>"],
        ["q", "q"],
        [{"answer": "5"}, {"answer": "5"}],
    )
    assert out["accuracy"].tolist() == [1.0, 0.0]


def test_a_lone_letter_gold_is_a_choice_without_answer_type():
    out = AccuracyReward()(
        ["<think>a</think><answer>B)</answer>", r"\boxed{(A) or (B)}"], ["q"] * 2, [{"answer": "B"}] * 2
    )
    assert out["accuracy"].tolist() == [1.0, 0.0]


def test_multiple_gold_answers():
    out = AccuracyReward()([r"\boxed{6}"], ["q"], [{"answer": ["5", "6"]}])
    assert out["accuracy"].tolist() == [1.0]


def test_non_string_sample_is_nan_not_zero():
    out = VerifiableReward()([r"<think>a</think>\boxed{1}", None], ["q", "q"], [{"answer": "1"}, {"answer": "1"}])
    assert out["verifiable"][0] == 1.0 and torch.isnan(out["verifiable"][1])
    assert torch.isnan(out["accuracy"][1]) and torch.isnan(out["format"][1])


def test_missing_answer_names_the_sample():
    with pytest.raises(ValueError, match=r"metadata\[1\]"):
        AccuracyReward()([r"\boxed{1}", r"\boxed{2}"], ["q", "q"], [{"answer": "1"}, {"choices": ["a"]}])
    with pytest.raises(ValueError, match=r"metadata\[0\]"):
        VerifiableReward()([r"\boxed{1}"], ["q"], [{}])
    with pytest.raises(ValueError):
        AccuracyReward()([r"\boxed{1}"], ["q"], None)


def test_bad_answer_type_and_lengths():
    with pytest.raises(ValueError, match="answer_type"):
        AccuracyReward()([r"\boxed{1}"], ["q"], [{"answer": "1", "answer_type": "vibes"}])
    with pytest.raises(ValueError, match="samples"):
        AccuracyReward()([r"\boxed{1}"], ["q", "q"], [{"answer": "1"}])


def test_empty_batch():
    out = VerifiableReward()([], [], [])
    assert all(v.shape == (0,) and v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize(
    "pred,gold,by_value,literal",
    [
        ("9+2", "11", True, False),  # the operands restated: a reward hack where the question states them
        ("3\u00d74", "12", True, False),
        ("10!", "3628800", True, False),
        ("22/2", "11", True, False),  # MathRuler: a fraction is no integer literal
        ("11", "11", True, True),
        ("11.0", "11", True, True),
        ("1,000", "1000", True, True),
        ("12 cm", "12", True, True),  # units aside
        ("1e3", "1000", True, True),
        ("12", "11", False, False),
        ("3/4", "0.75", True, True),  # the rule is about integer gold answers only
        (r"\frac{6}{2}", r"\frac{3}{1}", True, True),  # nor a gold fraction that happens to be whole
    ],
)
def test_integer_answers_literal_is_mathrulers_strict_rule(pred, gold, by_value, literal):
    """MathRuler (hiyouga/MathRuler ``grader.py``, ``grade_answer``): "if the ground truth answer is an integer,
    we require the given answer to be a strict match (no sympy.simplify)"; genrl matches by value unless
    ``integer_answers="literal"``."""
    response = f"<think>x</think> <answer>{pred}</answer>"
    for mode, expected in (("value", by_value), ("literal", literal)):
        reward = VerifiableReward(integer_answers=mode)
        assert reward([response], None, [{"answer": gold, "answer_type": "numeric"}])["accuracy"].item() == expected
    with pytest.raises(ValueError, match="integer_answers must be one of value, literal, got 'strict'"):
        AccuracyReward(integer_answers="strict")
