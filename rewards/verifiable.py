"""Verifiable (rule-based) rewards for reasoning RL on text/VLM policies.

The conventions follow the R1-style VLM recipes, re-implemented here:

* hiyouga/EasyR1 ``examples/reward_function/math.py`` and LengSicong/MMR1
  ``verl/utils/reward_score/math.py``: the answer is the content of the *last* ``\\boxed{}``
  (brace-balanced scan, as in ``mathruler.grader.extract_boxed_content``); the format
  reward is ``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", response, re.DOTALL)``;
  the overall score is ``(1 - format_weight) * accuracy + format_weight * format`` with
  ``format_weight = 0.1`` (MMR1 hard-codes ``0.9 * accuracy + 0.1 * format``).
* EasyR1 ``examples/reward_function/r1v.py``: the alternative ``<answer>`` format,
  ``re.fullmatch(r"<think>.*?</think>\\s*<answer>.*?</answer>", response, re.DOTALL)``.
* hiyouga/MathRuler ``mathruler/grader.py`` (itself from openai/prm800k): normalisation
  (drop ``$``, ``\\text{}``, ``%``, units, ``^\\circ``, properly formatted thousands commas)
  and equality by ``sympy.simplify(a - b) == 0``, with size guards against hangs.

Contract (README.md, "Rewards"): ``reward(samples, prompts, metadata) -> dict[str, Tensor[B]]``;
``samples`` are response strings, ``metadata[i]["answer"]`` the gold answer, optionally
``metadata[i]["choices"]`` (letter -> option text, or a list read as A, B, C, ...) and
``metadata[i]["answer_type"]`` in ``{"numeric", "symbolic", "choice", "text"}``. A wrong or
malformed answer scores 0; only a sample that cannot be scored at all (not a string) is NaN.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional, Sequence

import torch

from genrl.registry import REWARDS

ANSWER_TYPES = ("numeric", "symbolic", "choice", "text")
MAX_SYMPY_CHARS = 200  # longer expressions are not handed to sympy (it can hang on them)
MAX_EXPONENT = 64  # larger literal exponents are refused before sympy evaluates them
REL_TOL = 1e-6

# ----------------------------------------------------------------------------- extraction

_TAG_SPACES = re.compile(r"<\s*(/?)\s*(think|answer)\s*>")


def _canonical_tags(text: str) -> str:
    """``< think >``/``</ answer>`` -> ``<think>``/``</answer>`` (EasyR1 strips such spaces
    for Qwen2.5-VL-32B outputs; we only touch the two tag names, not ``a < b`` in maths)."""
    return _TAG_SPACES.sub(r"<\1\2>", text)


def _braced(text: str, start: int) -> Optional[tuple[str, int]]:
    """``text[start]`` must be ``{``: returns (content, index after the matching ``}``) or None."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None  # unclosed


def _last_boxed(text: str) -> Optional[str]:
    """Stripped content of the last ``\\boxed{...}``; None if absent, unclosed or empty."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    found = _braced(text, start + len("\\boxed"))
    if found is None:
        return None
    return found[0].strip() or None


def extract_answer(text: Any) -> Optional[str]:
    """The final answer of a response, or None; never raises.

    The content of the last ``\\boxed{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}``
    gives ``\\frac{1}{2}``); else the stripped content of the last ``<answer>...</answer>``,
    or the boxed part of it when it holds a ``\\boxed{}``. An unclosed brace or tag, or an
    empty answer, gives None. Linear time, so a very long garbage string is cheap.
    """
    if not isinstance(text, str):
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    text = _canonical_tags(text)
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end if end >= 0 else 0)
    if end < 0 or start < 0:
        return None
    content = text[start + len("<answer>") : end].strip()
    if "\\boxed{" in content:
        return _last_boxed(content)
    return content or None


# ----------------------------------------------------------------------------- normalisation

_WRAPPERS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|boxed)\s*\{([^{}]*)\}")
_UNITS = (
    "mm|cm|km|m|kg|mg|g|ml|s|sec|second|min|minute|hr|hour|day|week|month|year|"
    "ft|foot|feet|inch|yard|mile|meter|centimeter|kilometer|millimeter|gram|kilogram|"
    "liter|litre|degree|radian|unit|dollar|cent|point|people|person|student|apple"
)
_TRAILING_UNIT = re.compile(
    rf"(?<=[\d}}).])\s+(?:(?:sq|square|cubic)\s+)?(?:{_UNITS})(?:e?s)?(?:\^\{{?[23]\}}?)?$", re.I
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # one pass: 1,000,000 -> 1000000


def _normalize(s: str) -> str:
    """Canonical string for comparison (PRM800K/MathRuler-style normalisation).

    Strips ``$``, ``\\text{}``/``\\mathrm{}``-style wrappers, ``\\left``/``\\right``, LaTeX
    spacing (``\\!``, ``\\,``), ``%`` (so ``50%`` equals ``50``, never ``0.5``: PRM800K and
    MathRuler drop the sign rather than divide by 100), degree signs, a trailing unit word
    after a number (``12 cm``), properly formatted thousands commas (``1,000``), a
    ``x =`` prefix and trailing periods; ``\\dfrac``/``\\tfrac`` become ``\\frac``.
    """
    s = s.strip()
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[!,;:]|\\ |~", " ", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    for _ in range(10):  # innermost wrappers first; nesting deeper than 10 is left alone
        s, n = _WRAPPERS.subn(r"\1", s)
        if not n:
            break
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ", "", s)
    s = s.strip().rstrip(".").strip()
    s = _TRAILING_UNIT.sub("", s)
    s = _THOUSANDS.sub("", s)
    m = re.fullmatch(r"[A-Za-z]\s*=\s*([^=]+)", s)
    if m:
        s = m.group(1)
    return " ".join(s.split()).rstrip(".").strip()


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"


def _to_number(s: str) -> Optional[float]:
    """A finite float for a normalised plain number (int, decimal, scientific ``1e3``),
    fraction ``3/4`` or ``\\frac{3}{4}`` (optionally signed); else None."""
    t = s.replace(" ", "")
    try:
        if re.fullmatch(_NUMBER, t):
            value = float(t)
        elif m := re.fullmatch(rf"({_NUMBER})/({_NUMBER})", t):
            value = float(m.group(1)) / float(m.group(2))
        elif m := re.fullmatch(rf"([+-]?)\\frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}", t):
            value = float(m.group(2)) / float(m.group(3)) * (-1 if m.group(1) == "-" else 1)
        else:
            return None
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def _close(a: complex, b: complex) -> bool:
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b)) or a == b


# ----------------------------------------------------------------------------- sympy

_FUNCTIONS = ("sqrt", "sin", "cos", "tan", "log", "exp")
_GREEK = "alpha|beta|gamma|delta|theta|lambda|mu|sigma|phi|omega"


def _latex_arg(s: str, i: int) -> tuple[Optional[str], int]:
    """The converted argument of a LaTeX command at ``s[i:]`` (``{...}`` or one character,
    as in ``\\frac12``) and the index after it; (None, i) if there is none."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i < len(s) and s[i] == "{":
        found = _braced(s, i)
        return (None, i) if found is None else (_latex_to_sympy(found[0]), found[1])
    if i < len(s) and s[i].isalnum():
        return s[i], i + 1
    return None, i


def _latex_to_sympy(s: str) -> Optional[str]:
    """Small LaTeX -> sympy-syntax conversion, or None when something unknown is left.

    ``\\frac{a}{b}`` -> ``((a)/(b))``, ``\\sqrt{x}`` -> ``sqrt(x)``, ``\\sqrt[n]{x}`` ->
    ``((x)**(1/(n)))``, ``^`` -> ``**``, ``\\cdot``/``\\times`` -> ``*``, ``\\pi`` -> ``pi``;
    ``\\sin``, ``\\ln`` etc. lose their backslash; other braces become parentheses.
    """
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            num, i = _latex_arg(s, i + len("\\frac"))
            den, i = _latex_arg(s, i)
            if num is None or den is None:
                return None
            out.append(f"(({num})/({den}))")
        elif s.startswith("\\sqrt", i):
            i += len("\\sqrt")
            root = "2"
            if i < len(s) and s[i] == "[":
                close = s.find("]", i)
                root = _latex_to_sympy(s[i + 1 : close]) if close > 0 else None
                i = close + 1
            arg, i = _latex_arg(s, i)
            if arg is None or root is None:
                return None
            out.append(f"sqrt({arg})" if root == "2" else f"(({arg})**(1/({root})))")
        else:
            out.append(s[i])
            i += 1
    t = "".join(out)
    t = re.sub(r"\\(?:cdot|times)(?![A-Za-z])", "*", t)
    t = re.sub(r"\\div(?![A-Za-z])", "/", t)
    t = re.sub(r"\\infty(?![A-Za-z])", "oo", t)
    t = re.sub(r"\\ln(?![A-Za-z])", "log", t)
    t = re.sub(rf"\\(pi|sin|cos|tan|log|exp|{_GREEK})(?![A-Za-z])", r" \1 ", t)
    t = t.replace("^", "**").replace("{", "(").replace("}", ")")
    return None if "\\" in t else t


def _sympy_expr(s: str):
    """Parse a normalised answer into a sympy expression; None if unsafe or unparsable.

    ``parse_expr`` evaluates Python, so the input is first reduced to a whitelist of
    characters (letters, digits, ``+-*/().`` and spaces) and evaluated with no builtins
    and only the sympy names below; literal exponents above ``MAX_EXPONENT`` (``9^{9^9}``)
    are refused on an unevaluated parse before anything is evaluated.
    """
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if len(s) > MAX_SYMPY_CHARS:
        return None
    t = _latex_to_sympy(s)
    if t is None or not t.strip() or not re.fullmatch(r"[0-9A-Za-z+\-*/(). ]*", t):
        return None
    if re.search(r"Symbol|Integer|Float|Rational|Add|Mul|Pow", t):  # our namespace, not the answer's
        return None
    # a lone letter before "(" is a factor, not a function call: x(x+1) -> x*(x+1)
    t = re.sub(r"(?<![A-Za-z])([A-Za-z])\s*\(", r"\1*(", t)
    names = {
        n: getattr(sympy, n)
        for n in ("Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", *_FUNCTIONS, "pi", "oo")
    }
    transformations = standard_transformations + (implicit_multiplication_application,)

    def parse(evaluate: bool):
        return parse_expr(
            t,
            local_dict={},
            global_dict={"__builtins__": {}, **names},
            transformations=transformations,
            evaluate=evaluate,
        )

    # innermost powers first, so evaluating an exponent only ever meets checked, small powers
    powers = [p for p in sympy.preorder_traversal(parse(False)) if isinstance(p, sympy.Pow)]
    for p in sorted(powers, key=lambda p: sum(isinstance(q, sympy.Pow) for q in sympy.preorder_traversal(p.exp))):
        if not p.exp.free_symbols and abs(complex(p.exp.evalf())) > MAX_EXPONENT:
            return None
    return parse(True)


def _sympy_equal(pred: str, gold: str) -> bool:
    """Equal under sympy: closed-form numbers within ``REL_TOL``, else ``simplify(a - b) == 0``."""
    import sympy

    a, b = _sympy_expr(pred), _sympy_expr(gold)
    if a is None or b is None:
        return False
    if not a.free_symbols and not b.free_symbols:
        return _close(complex(a.evalf()), complex(b.evalf()))
    return sympy.simplify(a - b) == 0


def is_equivalent(pred: Any, gold: Any) -> bool:
    """Whether two maths answers are equal; never raises, False on garbage.

    After :func:`_normalize`: exact string match; else, when both are plain numbers
    (``7``, ``3.0``, ``1e3``, ``3/4``, ``\\frac{3}{4}``), equality within relative tolerance
    1e-6 (unreduced fractions count by value); else symbolic equality with sympy (see
    :func:`_sympy_equal`), e.g. ``2\\sqrt{2}`` == ``\\sqrt{8}``, ``x^2+2x+1`` == ``(x+1)^2``.
    Expressions over ``MAX_SYMPY_CHARS`` characters only get the string and number checks.
    Tuples, intervals, sets and equations are compared as strings only.
    """
    try:
        if pred is None or gold is None:
            return False
        p, g = _normalize(str(pred)), _normalize(str(gold))
        if not p or not g:
            return False
        if p == g or p.replace(" ", "") == g.replace(" ", ""):
            return True
        pn, gn = _to_number(p), _to_number(g)
        if pn is not None and gn is not None:
            return _close(pn, gn)
        return bool(_sympy_equal(p, g))
    except Exception:  # sympy raises many kinds of errors on odd input: not equal
        return False


def _text_equal(pred: Any, gold: Any) -> bool:
    """Case-insensitive match of normalised free-text answers."""
    if pred is None or gold is None:
        return False
    p, g = _normalize(str(pred)).casefold(), _normalize(str(gold)).casefold()
    return bool(p) and p == g


# ----------------------------------------------------------------------------- multiple choice

_LETTER_ONLY = re.compile(r"\(?\s*([A-Za-z])\s*\)?\s*[.:)]?")  # B, (B), B., B), b
_LETTER_LEAD = re.compile(r"^(?:\(\s*([A-Za-z])\s*\)|([A-Za-z])\s*[.:)])\s")  # "B) text", "(B) text"
# "The answer is B", "answer: (c)", "the correct option is b." -- a lowercase letter counts only
# in parentheses or at the very end, so "the answer is a triangle" is not read as "A"
_LETTER_PHRASE = re.compile(
    r"(?i:answer|option|choice)\s*(?:(?i:is)\s*:?|:)?\s*(?:\(\s*([A-Za-z])\s*\)|([A-Z])\b|([a-z])\s*[.)]?\s*$)"
)


def _choices_dict(choices: Any) -> dict[str, str]:
    if not choices:
        return {}
    if isinstance(choices, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    return {chr(ord("A") + i): str(v) for i, v in enumerate(choices)}


def _letter(text: str) -> Optional[str]:
    """The option letter a response names, upper-cased, or None."""
    text = _normalize(text)
    if m := _LETTER_ONLY.fullmatch(text):
        return m.group(1).upper()
    if m := _LETTER_LEAD.match(text + " "):
        return (m.group(1) or m.group(2)).upper()
    matches = list(_LETTER_PHRASE.finditer(text))
    if matches:
        return next(g for g in matches[-1].groups() if g).upper()
    return None


def _letter_from_text(text: str, options: dict[str, str]) -> Optional[str]:
    """The single option whose text ``text`` equals (string or maths equivalence), else None."""
    hits = [k for k, v in options.items() if _text_equal(text, v) or is_equivalent(text, v)]
    return hits[0] if len(hits) == 1 else None


def match_choice(pred: Any, gold: Any, choices: Any = None) -> bool:
    """Whether ``pred`` picks the option ``gold`` (a letter such as ``"B"`` or ``"(B)"``).

    ``pred`` may be ``"B"``, ``"(B)"``, ``"B."``, ``"B) text"``, ``"The answer is B"``
    (letters case-insensitive, A-Z), or, when ``choices`` (letter -> option text, or a list
    read as A, B, ...) is given, the option's text itself. A gold that is not a letter is
    looked up among the option texts; failing that, the texts are compared. Never raises.
    """
    try:
        if pred is None or gold is None:
            return False
        options = _choices_dict(choices)
        gold_letter = _letter(str(gold))
        if gold_letter is None and options:
            gold_letter = _letter_from_text(str(gold), options)
        if gold_letter is None:
            return _text_equal(pred, gold) or is_equivalent(pred, gold)
        pred_letter = _letter(str(pred))
        if pred_letter is None and options:
            pred_letter = _letter_from_text(str(pred), options)
        return pred_letter == gold_letter
    except Exception:
        return False


# ----------------------------------------------------------------------------- format


def format_ok(text: Any) -> bool:
    """Whether a response follows the reasoning format (a stricter EasyR1/MMR1 rule).

    Passes iff, after stripping outer whitespace (and spaces inside the tag names):
    it starts with ``<think>``; ``<think>`` and ``</think>`` each occur exactly once; and
    after ``</think>`` comes either exactly ``<answer>X</answer>`` (only whitespace around
    it, r1v style) or, when there are no answer tags there, text holding a ``\\boxed{X}``
    (math style); X must be a non-empty, well-formed answer (:func:`extract_answer`).
    The think block itself may be empty, as in EasyR1's ``.*``.
    """
    if not isinstance(text, str):
        return False
    text = _canonical_tags(text).strip()
    if not text.startswith("<think>") or text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    tail = text.split("</think>", 1)[1]
    if "<answer>" in tail or "</answer>" in tail:
        m = re.fullmatch(r"\s*<answer>(.*)</answer>\s*", tail, re.DOTALL)
        if not m or "<answer>" in m.group(1) or "</answer>" in m.group(1):
            return False
    elif _last_boxed(tail) is None:
        return False
    return extract_answer(tail) is not None


# ----------------------------------------------------------------------------- rewards


def _check_batch(
    samples: Sequence, prompts: Optional[Sequence], metadata: Optional[Sequence[Mapping]]
) -> list[Mapping]:
    if metadata is None:
        raise ValueError("verifiable rewards need metadata[i]['answer'] (the gold answer) for every sample")
    if len(metadata) != len(samples) or (prompts is not None and len(prompts) != len(samples)):
        got = "no" if prompts is None else len(prompts)
        raise ValueError(f"got {len(samples)} samples, {got} prompts and {len(metadata)} metadata entries")
    for i, m in enumerate(metadata):
        if not isinstance(m, Mapping) or m.get("answer") is None:
            raise ValueError(f"metadata[{i}] has no 'answer' (the gold answer of sample {i})")
        if m.get("answer_type") not in (None, *ANSWER_TYPES):
            raise ValueError(f"metadata[{i}]['answer_type'] is {m['answer_type']!r}; valid: {', '.join(ANSWER_TYPES)}")
    return list(metadata)


def score_accuracy(response: str, meta: Mapping) -> float:
    """1.0 if the extracted answer matches ``meta["answer"]`` (any of them, if a list)."""
    pred = extract_answer(response)
    if pred is None:
        return 0.0
    kind = meta.get("answer_type") or ("choice" if meta.get("choices") else "numeric")
    golds = meta["answer"] if isinstance(meta["answer"], (list, tuple)) else [meta["answer"]]
    if kind == "choice":
        ok = any(match_choice(pred, g, meta.get("choices")) for g in golds)
    elif kind == "text":
        ok = any(_text_equal(pred, g) for g in golds)
    else:  # numeric and symbolic share one matcher: numbers first, then sympy
        ok = any(is_equivalent(pred, g) for g in golds)
    return float(ok)


def _per_sample(fn, samples: Sequence, metadata: Sequence[Mapping]) -> torch.Tensor:
    """``[B]`` float32; NaN for a sample that is not a string (it cannot be scored)."""
    return torch.tensor(
        [fn(s, m) if isinstance(s, str) else float("nan") for s, m in zip(samples, metadata)], dtype=torch.float32
    )


@REWARDS.register("accuracy")
class AccuracyReward:
    """``{"accuracy": 1.0 | 0.0}``: extracted answer vs ``metadata[i]["answer"]``; the matcher
    follows ``answer_type`` (auto: ``choice`` when ``choices`` are given, else maths)."""

    def __call__(self, samples: Sequence[str], prompts=None, metadata: Optional[Sequence[Mapping]] = None):
        metadata = _check_batch(samples, prompts, metadata)
        return {"accuracy": _per_sample(score_accuracy, samples, metadata)}


@REWARDS.register("format")
class FormatReward:
    """``{"format": 1.0 | 0.0}`` by :func:`format_ok`; needs no gold answer."""

    def __call__(self, samples: Sequence[str], prompts=None, metadata: Optional[Sequence[Mapping]] = None):
        if prompts is not None and len(prompts) != len(samples):
            raise ValueError(f"got {len(samples)} samples and {len(prompts)} prompts")
        return {"format": _per_sample(lambda s, _: float(format_ok(s)), samples, [None] * len(samples))}


@REWARDS.register("verifiable")
class VerifiableReward:
    """``(1 - format_weight) * accuracy + format_weight * format``, plus both parts.

    ``format_weight`` defaults to 0.1, EasyR1's ``math.py`` default (MMR1's ``0.9/0.1``).
    """

    def __init__(self, *, format_weight: float = 0.1) -> None:
        if not 0.0 <= format_weight <= 1.0:
            raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
        self.format_weight = float(format_weight)
        self._accuracy, self._format = AccuracyReward(), FormatReward()

    def __call__(
        self,
        samples: Sequence[str],
        prompts: Optional[Sequence[str]] = None,
        metadata: Optional[Sequence[Mapping]] = None,
    ):
        acc = self._accuracy(samples, prompts, metadata)["accuracy"]
        fmt = self._format(samples, prompts, metadata)["format"]
        w = self.format_weight
        return {"verifiable": (1 - w) * acc + w * fmt, "accuracy": acc, "format": fmt}
