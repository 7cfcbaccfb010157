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
  (drop ``$``, ``\\text{}``, ``%``, units, ``^\\circ``, properly formatted thousands commas,
  ``a and b`` as a list, mixed numbers ``2 1/2`` as sums, ``\\pm``, Unicode maths signs, ``2 million``,
  a left side of up to two letters ``AB = 5``), tuples compared item by item, equations compared as
  ``left - right`` up to sign, ``10!`` and ``e^{x}`` read as maths, and no sympy for words (more
  than two unknown letters). Equality is exact: numbers as fractions, closed forms to 40 digits
  beyond their size, expressions with symbols at eight seeded rational points of mixed signs (an
  identity test that cannot hang the way ``sympy.simplify(a - b) == 0`` can on ``(x+y+1)^{20}``),
  with size guards on what sympy may evaluate (power towers, huge literals and e-notation, symbols
  in exponents). Unit words are read in one spelling each (``5 minutes`` is ``5 min``), with
  their power (``cm^2`` is not ``cm^3``).

Deliberate differences from MathRuler (each tested): a bare list of answers (``2, 1``) and a set
match in any order; a decimal of at least six significant digits counts for a value with no finite
decimal expansion when correctly rounded (``1.4142136`` for ``\\sqrt{2}``); unreduced fractions
count by value (``6/2`` is 3), and so does any expression against an integer gold answer (``9+2``,
``3\times 4`` and ``10!`` are 11, 12 and 3628800, where MathRuler requires an integer literal and scores them
0; ``integer_answers: literal`` applies MathRuler's rule): a question stating its operands may let a policy
restate them instead of computing the answer; a unit on both sides must agree (``5 s`` is not ``5 min``);
infinity equals only itself. A multiple-choice answer naming several options (``(A) or (B)``) names none.

Contract (README.md, "Rewards"): ``reward(samples, prompts, metadata) -> dict[str, Tensor[B]]``;
``samples`` are response strings, ``metadata[i]["answer"]`` the gold answer, optionally
``metadata[i]["choices"]`` (letter -> option text, or a list read as A, B, C, ...) and
``metadata[i]["answer_type"]`` in ``{"numeric", "symbolic", "choice", "text"}``. A wrong or
malformed answer scores 0; only a sample that cannot be scored at all (not a string) is NaN.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Any, Mapping, Optional, Sequence

import torch

from genrl.registry import REWARDS

ANSWER_TYPES = ("numeric", "symbolic", "choice", "text")
MAX_SYMPY_CHARS = 200  # longer expressions are not handed to sympy (it can hang on them)
MAX_DIGITS = 1000  # expressions whose value may have more digits are refused before sympy evaluates them
MIN_ROUNDED_DIGITS = 6  # a decimal standing for an irrational (or 1/3) needs this many significant digits

# ----------------------------------------------------------------------------- extraction

_TAG_SPACES = re.compile(r"<\s*+(/?)\s*+(think|answer)\s*+>")  # possessive: linear on long runs of spaces


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

    The stripped content of the last ``<answer>...</answer>`` after the reasoning (after
    ``</think>`` when there is one), or the boxed part of it when it holds a ``\\boxed{}``; else
    the content of the last ``\\boxed{...}`` (balanced braces, so ``\\boxed{\\frac{1}{2}}`` gives
    ``\\frac{1}{2}``). The answer block wins over a box inside ``<think>``, as EasyR1's ``r1v.py``
    reads the ``<answer>`` the format rule checks. An unclosed brace or tag, or an empty answer,
    gives None. Linear time, so a very long garbage string is cheap.
    """
    if not isinstance(text, str):
        return None
    text = _canonical_tags(text)
    think_end = text.rfind("</think>")
    tail = text[think_end + len("</think>") :] if think_end >= 0 else text
    end = tail.rfind("</answer>")
    start = tail.rfind("<answer>", 0, end if end >= 0 else 0)
    if end >= 0 and start >= 0:
        content = tail[start + len("<answer>") : end].strip()
        if "\\boxed{" in content:
            return _last_boxed(content)
        return content or None
    return _last_boxed(text)


# ----------------------------------------------------------------------------- normalisation

_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|boxed)\s*+(?=\{)")
# unit words (plural -s / -es allowed for those of three letters or more) -> one spelling each
_UNIT_NAMES = {
    **dict.fromkeys(("mm", "millimeter", "millimetre"), "mm"),
    **dict.fromkeys(("cm", "centimeter", "centimetre"), "cm"),
    **dict.fromkeys(("km", "kilometer", "kilometre"), "km"),
    **dict.fromkeys(("m", "meter", "metre"), "m"),
    **dict.fromkeys(("mg", "milligram"), "mg"),
    **dict.fromkeys(("g", "gram"), "g"),
    **dict.fromkeys(("kg", "kilogram"), "kg"),
    **dict.fromkeys(("ml", "milliliter", "millilitre"), "ml"),
    **dict.fromkeys(("liter", "litre"), "l"),
    **dict.fromkeys(("s", "sec", "second"), "s"),
    **dict.fromkeys(("min", "minute"), "min"),
    **dict.fromkeys(("h", "hr", "hour"), "h"),
    **dict.fromkeys(("ft", "foot", "feet"), "ft"),
    **{u: u for u in ("day", "week", "month", "year", "inch", "yard", "mile", "degree", "radian", "unit")},
    **{u: u for u in ("dollar", "cent", "point", "people", "person", "student", "apple", "cup")},
}
_UNITS = "|".join(sorted((u for u in _UNIT_NAMES if len(u) > 1), key=len, reverse=True))
_SHORT_UNITS = "m|g|s|h"  # one letter: a unit only after a digit and a space (3/2 g may be gravity)
_TRAILING_UNIT = re.compile(
    rf"(?:(?:(?<=[\d}}).])|(?<=\\pi))\s*+(?:(?:sq|square|cubic)\s++)?(?P<u>{_UNITS})|(?<=\d)\s++(?P<s>{_SHORT_UNITS}))"
    rf"(?P<pl>e?s)?(?P<pow>\^\{{?[23]\}}?)?(?P<per>\s*+/\s*+(?:s|sec|h|hr|hour|min))?$",
    re.I,
)
_UNICODE = {
    "\u2212": "-",
    "\u2013": "-",
    "\u03c0": "\\pi",
    "\u221e": "\\infty",
    "\u221a": "\\sqrt",
    "\u00d7": "\\times",
    "\u00bd": "\\frac{1}{2}",
    "\u2264": "\\le",
    "\u2265": "\\ge",
    "\u2260": "\\ne",
}  # minus, dash, pi, ...
_SCALES = {"thousand": "e3", "million": "e6", "billion": "e9"}
_WHOLE_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})++(?:\.\d+)?")  # 1,000,000 (the whole answer only)


def _unwrap(s: str) -> str:
    """``\\text{...}``, ``\\mathrm{...}`` and the like replaced by their content (balanced braces,
    so ``\\text{\\frac12}`` keeps its fraction); at most 50 wrappers."""
    for _ in range(50):
        m = _WRAPPER.search(s)
        if m is None:
            return s
        found = _braced(s, m.end())
        if found is None:
            return s
        s = s[: m.start()] + found[0] + s[found[1] :]
    return s


def _normalize(s: str) -> str:
    """Canonical string for comparison (PRM800K/MathRuler-style normalisation).

    Strips ``$``, ``\\text{}``/``\\mathrm{}``-style wrappers, ``\\left``/``\\right``, LaTeX
    spacing (``\\!``, ``\\,``; a row break ``\\\\`` is kept), ``%`` (so ``50%`` equals ``50``, never
    ``0.5``: PRM800K and MathRuler drop the sign rather than divide by 100), degree signs, a thousands
    separator in a plain number (``1,000``, ``1{,}000``; not inside tuples, where a comma separates),
    an ``x \\in`` prefix and trailing periods; ``\\dfrac``/``\\tfrac`` become ``\\frac``, ``\\frac12``
    becomes ``\\frac{1}{2}``, a mixed number ``2\\frac{1}{2}`` or ``2 1/2`` becomes ``(2+\\frac{1}{2})``,
    escaped set braces ``\\{ \\}`` become ``{ }``, ``a and b`` becomes ``a, b``, ``\\pm a`` becomes
    ``a, -(a)``, ``2 million`` becomes ``2e6`` and Unicode signs become LaTeX. An ``x =`` prefix
    (:func:`_variable`) and units (:func:`_split_unit`) are read later, so ``5 s`` and ``5 min``, or
    ``x = 3`` and ``y = 3``, stay apart.
    """
    for u, latex in _UNICODE.items():
        s = s.replace(u, latex)
    s = s.strip()
    s = re.sub(r"\*\*(.+?)\*\*", r"\1", s)  # markdown bold
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\%|%|(?<=\d)\s*+percent\b", "", s)
    s = re.sub(r"(?<=\d)\s*+(thousand|million|billion)\b", lambda m: _SCALES[m.group(1)], s)  # 2 million
    s = re.sub(r"\\(ge|le|ne)q(?![A-Za-z])", r"\\\1", s)  # \geq -> \ge
    s = re.sub(r"^\\pm\s*+(.+)$", r"\1, -(\1)", s.strip())  # \pm 2: both
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"(?<=\d)(?:\{,\}|\\,)(?=\d{3})", "", s)  # 1{,}000, 1\,000
    s = re.sub(r"(?<!\\)\\[!,;:]|(?<!\\)\\ |~", " ", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\frac\s*+(\d)\s*+(\d)", r"\\frac{\1}{\2}", s)  # \frac12
    s = re.sub(
        rf"\\(?:text|mathrm|mbox)\s*+\{{\s*+((?:{_UNITS}|{_SHORT_UNITS})(?:e?s)?)\s*+\}}", r" \1", s
    )  # 12\mathrm{m}
    s = _unwrap(s)
    s = s.replace("\\{", "{").replace("\\}", "}")
    s = re.sub(r"\^\s*+\{?\s*+\\circ\s*+\}?|°|\\circ", "", s)
    s = re.sub(r"(?<![\w.}^_])(\d+)\s*+\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\\frac{\2}{\3})", s)  # mixed number
    s = re.sub(r"^([+-]?)(\d+)\s++(\d+)\s*+/\s*+(\d+)$", r"\1(\2+\3/\4)", s.strip())  # "2 1/2"
    s = re.sub(r"(?<!\s)\s++and\s++", ", ", s)  # (?<!\s): one try per run of spaces, linear
    s = s.strip().rstrip(".").strip()
    if _WHOLE_THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = re.sub(r"^[A-Za-z]\s*+\\in(?![A-Za-z])\s*+", "", s)  # x \in [1, 2]
    return " ".join(s.split()).rstrip(".").strip()


def _compact(s: str) -> str:
    """``s`` without the spaces around operators and brackets (``x + 1`` -> ``x+1``), keeping the
    ones between two words or numbers (``2 3`` is not ``23``)."""
    return re.sub(r"(?<!\s)\s*+([^\w\s])\s*+", r"\1", s)


def _variable(s: str) -> tuple[Optional[str], str]:
    """``("x", "3")`` for ``x = 3`` (also ``AB = 5``, ``x_1 = 2``), else ``(None, s)``."""
    m = re.fullmatch(r"([A-Za-z]{1,2}|[A-Za-z]_\{?\w+\}?)\s*+=\s*+([^=<>]+)", s)  # MathRuler: up to two letters
    return (m.group(1), m.group(2).strip()) if m else (None, s)


def _split_unit(s: str) -> tuple[str, Optional[str]]:
    """``("12", "cm")`` for ``"12 cm"`` (a known unit word after a number; plural and ``^2`` / ``^3``
    allowed), else ``(s, None)``."""
    m = _TRAILING_UNIT.search(s)
    if m is None or m.start() == 0:
        return s, None
    word = (m.group("u") or m.group("s")).lower()
    if m.group("pl") and len(word) < 3 and word != "hr":  # "ms" is not metres
        return s, None
    power = re.sub(r"\D", "", m.group("pow") or "")
    per = (m.group("per") or "").replace(" ", "").lower()
    return s[: m.start()].strip(), _UNIT_NAMES.get(word, word) + (f"^{power}" if power else "") + per


_NUMBER = r"[+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?"  # unambiguous: linear on long digit runs


def _to_number(s: str) -> Optional[Fraction]:
    """The exact value of a normalised plain number (int, decimal, scientific ``1e3``), fraction
    ``3/4`` or ``\\frac{3}{4}`` (optionally signed); else None (also for exponents beyond
    ``MAX_DIGITS``)."""
    t = _compact(s)
    if len(t) > 4 * MAX_DIGITS or " " in t:
        return None
    try:
        if re.fullmatch(_NUMBER, t):
            parts = [t]
        elif m := re.fullmatch(rf"({_NUMBER})/({_NUMBER})", t):
            parts = [m.group(1), m.group(2)]
        elif m := re.fullmatch(rf"([+-]?)\\frac\{{({_NUMBER})\}}\{{({_NUMBER})\}}", t):
            parts = [m.group(1) + m.group(2), m.group(3)]
        else:
            return None
        if any(abs(int(e)) > MAX_DIGITS for p in parts for e in re.findall(r"[eE]([+-]?\d+)", p)):
            return None
        values = [Fraction(p.replace("+-", "-").replace("-+", "-")) for p in parts]
        return values[0] if len(values) == 1 else values[0] / values[1]
    except (ValueError, ZeroDivisionError):
        return None


def _decimal_places(s: str) -> Optional[tuple[int, int]]:
    """``(significant digits, exponent of the last digit)`` of a plain decimal with a point
    (``"1.4142136"`` -> ``(8, -7)``), else None."""
    t = _compact(s)
    if "." not in t or not re.fullmatch(_NUMBER, t) or len(t) > MAX_DIGITS:
        return None
    sign, digits, exponent = Decimal(t).as_tuple()
    return len(digits), int(exponent)


def _rounds_to(decimal: str, exact) -> bool:
    """Whether the decimal string ``decimal`` is ``exact`` (a value with no finite decimal
    expansion: an irrational closed form, or a fraction like 1/3) correctly rounded to its last
    digit, with at least ``MIN_ROUNDED_DIGITS`` significant digits: ``1.4142136`` for ``\\sqrt{2}``,
    ``0.333333`` for ``1/3``; not ``3.14`` for ``\\pi``. ``exact`` is a ``Fraction`` or a sympy number."""
    places = _decimal_places(decimal)
    if places is None or places[0] < MIN_ROUNDED_DIGITS:
        return False
    half = Fraction(1, 2) * Fraction(10) ** places[1]
    if isinstance(exact, Fraction):
        q = exact.denominator
        for f in (2, 5):
            while q % f == 0:
                q //= f
        return q != 1 and abs(Fraction(_compact(decimal)) - exact) <= half
    import sympy

    if exact.is_Rational:
        return _rounds_to(decimal, Fraction(int(exact.p), int(exact.q)))
    if not exact.is_real:
        return False
    diff = abs(sympy.Rational(_compact(decimal)) - exact).evalf(places[0] + 20)
    return bool(diff <= sympy.Rational(half.numerator, half.denominator))


# ----------------------------------------------------------------------------- sympy

_FUNCTIONS = ("sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "log", "exp", "factorial")
_GREEK = "alpha|beta|gamma|delta|theta|lamda|mu|sigma|phi|omega"  # lamda: sympy's spelling (lambda is Python's)
_TRIG = "sin|cos|tan"


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
    s = re.sub(r"\\(?:cdot|times)(?![A-Za-z])", "*", s)  # also before a command: 2\cdot\sqrt{3}
    s = re.sub(r"\\lambda(?![A-Za-z])", lambda m: "\\lamda", s)
    s = re.sub(rf"\\({_TRIG})\s*+\^\s*+\{{\s*+-1\s*+\}}", r"\\a\1", s)  # \sin^{-1} is arcsin
    # a function's argument without brackets is one term: \sin x \cos x = sin(x) cos(x), \sin 2x = sin(2x)
    s = re.sub(
        rf"\\(a?(?:{_TRIG})|ln|log|exp)\s*+([0-9.]*+(?:[A-Za-z]|\\[A-Za-z]+)?)(?![A-Za-z(\[{{^_])",
        lambda m: f"\\{m.group(1)}({m.group(2)})" if m.group(2) else m.group(0),
        s,
    )
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
    t = re.sub(rf"\\(pi|a?(?:{_TRIG})|log|exp|{_GREEK})(?![A-Za-z])", r" \1 ", t)
    t = re.sub(r"(?<![A-Za-z])e\s*+\^", "E^", t)  # e^{x}: Euler's number
    t = re.sub(r"([A-Za-z])_\{?([0-9]+)\}?", r"\1\2", t)  # x_1, x_{12} -> the symbol x1, x12
    t = re.sub(r"(\d+)\s*+!", r"factorial(\1)", t)
    t = t.replace("^", "**").replace("{", "(").replace("}", ")")
    return None if "\\" in t else t


_KNOWN_NAMES = {*_FUNCTIONS, "pi", "oo", *_GREEK.split("|")}


def _digits_bound(e) -> float:
    """An upper bound on the decimal digits of the value (and the exact denominator) of the
    unevaluated sympy expression ``e``, with symbols standing for numbers below 10: what sympy
    would have to compute. ``inf`` when an exponent is itself beyond a million."""
    import sympy

    if e.is_Rational:
        return math.log10(max(abs(int(e.p)), int(e.q), 2))
    if e.is_Atom:
        return 0.5  # a symbol (evaluated below 3.2), pi, E
    if isinstance(e, sympy.Pow):
        base, x = _digits_bound(e.base), _digits_bound(e.exp)
        if x > 6:  # an exponent beyond a million (10^{x^{20}} too: x^{20} may be 10^{10})
            return math.inf
        return base * (abs(float(e.exp)) if e.exp.is_Rational else 10.0**x) + 1
    if isinstance(e, sympy.factorial):
        n = e.args[0]
        return math.lgamma(int(n) + 1) / math.log(10) + 1 if n.is_Integer and 0 <= int(n) <= 2000 else math.inf
    args = [_digits_bound(a) for a in e.args] or [1.0]
    if isinstance(e, sympy.Mul):
        return sum(args)
    if isinstance(e, sympy.exp):
        return 10.0 ** args[0] if args[0] <= 6 else math.inf
    return max(args) + 1  # Add and the functions that do not grow (sin, log, sqrt)


def _sympy_expr(s: str):
    """Parse a normalised answer into an exact sympy expression; None if unsafe, unparsable or not maths.

    ``parse_expr`` evaluates Python, so the input is first reduced to a whitelist of
    characters (letters, digits, ``+-*/().`` and spaces) and evaluated with no builtins
    and only the sympy names below. Decimals become exact rationals (``0.1`` is 1/10). Words are not
    maths: a run of three or more letters that is no known name (``triangle``) gives None, as
    MathRuler refuses more than two unknown letters (else ``silent`` and ``listen`` would be the same
    product of letters). An expression whose value may have more than ``MAX_DIGITS`` digits
    (``((10^{60})^{60})^{60}``, ``9^{9^9}``) is refused on an unevaluated parse before anything is
    evaluated.
    """
    import sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        rationalize,
        standard_transformations,
    )

    if len(s) > MAX_SYMPY_CHARS:
        return None
    t = _latex_to_sympy(s)
    if t is None or not t.strip() or not re.fullmatch(r"[0-9A-Za-z+\-*/(). ]*", t):
        return None
    if re.search(r"Symbol|Integer|Float|Rational|Number|Add|Mul|Pow", t):  # our namespace, not the answer's
        return None
    if any(len(w) >= 3 and w not in _KNOWN_NAMES for w in re.findall(r"[A-Za-z]+", t)):
        return None
    if any(int(x) > MAX_DIGITS for x in re.findall(r"\d[eE][+-]?(\d+)", t)):  # 1e9999999 is built before parsing ends
        return None
    # a lone letter before "(" is a factor, not a function call: x(x+1) -> x*(x+1)
    t = re.sub(r"(?<![A-Za-z])([A-Za-z])\s*\(", r"\1*(", t)
    names = {
        n: getattr(sympy, n)
        for n in (
            "Symbol",
            "Integer",
            "Float",
            "Rational",
            "Number",
            "Add",
            "Mul",
            "Pow",
            *_FUNCTIONS,
            "pi",
            "oo",
            "E",
        )
    }
    transformations = standard_transformations + (rationalize, implicit_multiplication_application)

    def parse(evaluate: bool):
        return parse_expr(
            t,
            local_dict={},
            global_dict={"__builtins__": {}, **names},
            transformations=transformations,
            evaluate=evaluate,
        )

    if _digits_bound(parse(False)) > MAX_DIGITS:
        return None
    return parse(True)


def _nonfinite(e) -> bool:
    """Whether ``e`` holds an infinity or nan."""
    import sympy

    return e.has(sympy.oo, sympy.S.NegativeInfinity, sympy.zoo, sympy.nan)


def _points(n_symbols: int, k: int) -> list:
    """The ``k``-th test point for ``n_symbols`` symbols: distinct rationals with 1 < |v| < 3, signs
    mixed between symbols and points (so sqrt(x^2) is not x, nor sqrt(x^2 y^2) xy), seeded."""
    import random

    import sympy

    rng = random.Random(9973 * k + n_symbols)
    return [sympy.Rational(rng.choice((-1, 1)) * rng.randint(10_001, 29_999), 10_000) for _ in range(n_symbols)]


def _values_equal(a, b) -> Optional[bool]:
    """``a == b`` for two sympy numbers: exactly when both are rational, else to 40 significant digits
    beyond their size (``2^{100} + \\sqrt2`` is not ``2^{100} - 1 + \\sqrt2``), with no absolute
    tolerance (``10^{-35} \\sqrt2`` is not 0); None when either is not a finite number."""
    if a.is_Rational and b.is_Rational:
        return bool(a == b)
    digits = 40 + int(max(_digits_bound(a), _digits_bound(b), 0))
    va, vb = a.evalf(digits, chop=True), b.evalf(digits, chop=True)
    if not (va.is_number and vb.is_number) or _nonfinite(va) or _nonfinite(vb):
        return None
    if va == 0 or vb == 0:
        return bool(va == vb)
    return bool(abs(va - vb) <= max(abs(va), abs(vb)) * 10.0 ** (10 - digits))


def _sympy_equal(pred: str, gold: str) -> bool:
    """Equal under sympy, exactly. Closed forms: the same value (:func:`_values_equal`), or a
    decimal that is the other correctly rounded (:func:`_rounds_to`). With symbols: the same value
    at eight rational points (:func:`_points`; at least four where both are defined) -- a
    random-point identity test, which unlike ``simplify(a - b) == 0`` cannot hang on
    ``(x+y+1)^{20}``. Infinity equals only the same infinity."""

    a, b = _sympy_expr(pred), _sympy_expr(gold)
    if a is None or b is None:
        return False
    if a == b:
        return True
    if _nonfinite(a) or _nonfinite(b):
        return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        if _values_equal(a, b):
            return True
        return _rounds_to(pred, b) or _rounds_to(gold, a)
    defined = 0
    for k in range(8):
        point = dict(zip(symbols, _points(len(symbols), k)))
        same = _values_equal(a.subs(point), b.subs(point))
        if same is False:
            return False
        defined += same is True
    return defined >= 4


INTEGER_ANSWERS = ("value", "literal")  # the accuracy / verifiable rewards' integer_answers option


def _integer_literal(s: str) -> bool:
    """MathRuler's ``_str_is_int`` of a normalised answer: a plain number whose value is an integer
    (``11``, ``11.0``, ``1e3``, ``1,000``, ``12 cm``), not an expression or fraction (``9+2``, ``22/2``)."""
    t = _split_unit(s)[0].strip()
    t = t.replace(",", "") if _WHOLE_THOUSANDS.fullmatch(t) else t
    n = _to_number(t) if re.fullmatch(_NUMBER, _compact(t)) else None
    return n is not None and n.denominator == 1


def is_equivalent(pred: Any, gold: Any, integer_answers: str = "value") -> bool:
    """Whether two maths answers are equal; never raises, False on garbage.

    After :func:`_normalize`: exact (or case-insensitive) string match; a unit on both sides must
    be the same (``5 s`` is not ``5 min``; ``12 cm`` is ``12``); lists compare item by item (tuples
    and intervals in order, with the same brackets; sets ``{}`` and bare lists ``1, 2`` in any
    order); plain numbers (``7``, ``3.0``, ``1e3``, ``3/4``, ``\\frac{3}{4}``) compare exactly
    (unreduced fractions count by value; ``1000001`` is not ``1000000``), except that a decimal of at
    least six significant digits counts for a value with no finite decimal expansion when it is that
    value correctly rounded (``0.333333`` for ``1/3``); else exact symbolic equality with sympy (see
    :func:`_sympy_equal`), e.g. ``2\\sqrt{2}`` == ``\\sqrt{8}``, ``x^2+2x+1`` == ``(x+1)^2``.
    Expressions over ``MAX_SYMPY_CHARS`` characters only get the string and number checks.
    ``integer_answers="literal"``: an integer gold answer needs an integer literal (MathRuler's rule,
    ``grade_answer``: ``9+2``, ``3\times 4``, ``22/2`` are not 11, 12, 11), where ``"value"`` (the default)
    compares any answer by value.
    """
    try:
        if pred is None or gold is None:
            return False
        p, g = _normalize(str(pred)), _normalize(str(gold))
        if integer_answers == "literal" and _integer_literal(g) and not _integer_literal(p):
            return False
        return bool(p and g) and _equal(p, g, 0)
    except Exception:  # sympy raises many kinds of errors on odd input: not equal
        return False


def _equal(p: str, g: str, depth: int) -> bool:
    """:func:`is_equivalent` of two normalised answers."""
    if _compact(p) == _compact(g) or p.casefold() == g.casefold():
        return True
    (pv, p), (gv, g) = _variable(p), _variable(g)
    if pv and gv and pv != gv:  # x = 3 is not y = 3
        return False
    if p.count("=") == 1 and g.count("=") == 1:  # equations: the same left - right, up to sign
        (pl, pr), (gl, gr) = p.split("="), g.split("=")
        left = f"({pl})-({pr})"
        return _sympy_equal(left, f"({gl})-({gr})") or _sympy_equal(left, f"({gr})-({gl})")
    (p, pu), (g, gu) = _split_unit(p), _split_unit(g)
    if pu and gu and pu != gu:
        return False
    p, g = (x.replace(",", "") if _WHOLE_THOUSANDS.fullmatch(x) else x for x in (p, g))  # 1,000 cm; x = 1,000
    if (pv or gv or pu or gu) and _compact(p) == _compact(g):
        return True
    lp, lg = _items(p), _items(g)
    if lp is not None or lg is not None:
        return lp is not None and lg is not None and depth < 4 and _items_equal(lp, lg, depth + 1)
    pn, gn = _to_number(p), _to_number(g)
    if pn is not None and gn is not None:
        return pn == gn or _rounds_to(p, gn) or _rounds_to(g, pn)
    return bool(_sympy_equal(p, g))


_OPEN, _CLOSE = "([{", ")]}"


def _items(s: str) -> Optional[tuple[str, list[str], str]]:
    """``(open, items, close)`` for a bracketed or bare comma-separated list of at least two items
    (``(1, 2]`` -> ``("(", ["1", "2"], "]")``; ``1, 2`` -> ``("", ["1", "2"], "")``); None otherwise
    (``(5)`` is no list). Commas inside nested brackets do not split. One pass: deep nesting is linear."""
    depth, top, inner, first_close = 0, [], [], None
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth < 0:
                return None
            if depth == 0 and first_close is None:
                first_close = i
        elif c == ",":
            (top if depth == 0 else inner if depth == 1 else []).append(i)
    if top:
        bounds, open_, close = [-1, *top, len(s)], "", ""
    elif inner and len(s) > 1 and s[0] in _OPEN and first_close == len(s) - 1:
        bounds, open_, close = [0, *inner, len(s) - 1], s[0], s[-1]
    else:
        return None
    return open_, [s[bounds[k] + 1 : bounds[k + 1]].strip() for k in range(len(bounds) - 1)], close


def _items_equal(a: tuple[str, list[str], str], b: tuple[str, list[str], str], depth: int) -> bool:
    (ao, ai, ac), (bo, bi, bc) = a, b
    if (ao, ac) != (bo, bc) or len(ai) != len(bi) or not all(ai) or not all(bi):
        return False
    if ao in ("{", ""):  # sets and bare lists: any order
        left = list(bi)
        for x in ai:
            hit = next((k for k, y in enumerate(left) if _equal(x, y, depth)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    return all(_equal(x, y, depth) for x, y in zip(ai, bi))


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
    r"(?i:answer|option|choice)\s*+(?:(?i:is)\s*+:?|:)?\s*+(?:\(\s*+([A-Za-z])\s*+\)|([A-Z])\b|([a-z])\s*+[.)]?\s*+$)"
)


def _choices_dict(choices: Any) -> dict[str, str]:
    if not choices:
        return {}
    if isinstance(choices, Mapping):
        return {str(k).strip().upper(): str(v) for k, v in choices.items()}
    return {chr(ord("A") + i): str(v) for i, v in enumerate(choices)}


# any other option letter a response also names: "(B)", "(b)", "B)", "b)", "B.", "B:" or "/ B"
_LETTER_MARKS = re.compile(
    r"\(\s*([A-Za-z])\s*\)|(?<![A-Za-z])([A-Z])[.:](?!\w)|(?<![A-Za-z(])([A-Za-z])\)|/\s*([A-Z])\b"
)


def _letter(text: str, letters: Optional[set[str]] = None) -> Optional[str]:
    """The option letter a response names, upper-cased, or None. A response that names more than one
    option letter (``(A) or (B)``, ``A. 10, B. 12``, every option listed) names none: hedging is not an
    answer (the reward hack of Visual-RFT issue #79). ``letters``, the options' letters when known,
    limits what counts as a letter (so the "I" of "I think B" is not one)."""
    text = _normalize(text)
    if m := _LETTER_ONLY.fullmatch(text):
        return m.group(1).upper()
    found = None
    if m := _LETTER_LEAD.match(text + " "):
        found = (m.group(1) or m.group(2)).upper()
    else:
        matches = [g for m in _LETTER_PHRASE.finditer(text) for g in m.groups() if g]
        matches = [x.upper() for x in matches if letters is None or x.upper() in letters]
        found = matches[-1] if matches else None
        if found is None and letters:  # "The answer is I think B": the one option letter standing alone
            alone = {x for x in re.findall(r"\b([A-Z])\b", text) if x in letters}
            found = alone.pop() if len(alone) == 1 else None
    if found is None:
        return None
    named = {g.upper() for m in _LETTER_MARKS.finditer(text) for g in m.groups() if g}
    # any other capital standing alone ("A or possibly B"), but not the article "A word" nor "I"
    named |= set(re.findall(r"(?<![A-Za-z'])([B-HJ-Z]|A(?!\s++[a-z]))(?![A-Za-z'])", text))
    named = {x for x in named if (x in letters if letters else x != "I")}
    return found if named <= {found} else None


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
        letters = set(options) or None
        gold_letter = _letter(str(gold), letters)
        if gold_letter is None and options:
            gold_letter = _letter_from_text(str(gold), options)
        if gold_letter is None:
            return _text_equal(pred, gold) or is_equivalent(pred, gold)
        # an option's own text first ("a" for the option "a" is that option, not letter A)
        exact = [k for k, v in options.items() if _text_equal(pred, v)]
        pred_letter = exact[0] if len(exact) == 1 else _letter(str(pred), letters)
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


def score_accuracy(response: str, meta: Mapping, integer_answers: str = "value") -> float:
    """1.0 if the extracted answer matches ``meta["answer"]`` (any of them, if a list); ``integer_answers``
    as :func:`is_equivalent` takes it."""
    pred = extract_answer(response)
    if pred is None:
        return 0.0
    golds = meta["answer"] if isinstance(meta["answer"], (list, tuple)) else [meta["answer"]]
    # auto: a choice when options are given or every gold is an option letter ("B", "(B)")
    lettered = all(re.fullmatch(r"\(?\s*[A-Z]\s*\)?", str(g).strip()) for g in golds)
    kind = meta.get("answer_type") or ("choice" if meta.get("choices") or lettered else "numeric")
    if kind == "choice":
        ok = any(match_choice(pred, g, meta.get("choices")) for g in golds)
    elif kind == "text":
        ok = any(_text_equal(pred, g) for g in golds)
    else:  # numeric and symbolic share one matcher: numbers first, then sympy
        ok = any(is_equivalent(pred, g, integer_answers) for g in golds)
    return float(ok)


def _per_sample(fn, samples: Sequence, metadata: Sequence[Mapping]) -> torch.Tensor:
    """``[B]`` float32; NaN for a sample that is not a string (it cannot be scored)."""
    return torch.tensor(
        [fn(s, m) if isinstance(s, str) else float("nan") for s, m in zip(samples, metadata)], dtype=torch.float32
    )


@REWARDS.register("accuracy", samples="text")
class AccuracyReward:
    """``{"accuracy": 1.0 | 0.0}``: extracted answer vs ``metadata[i]["answer"]``; the matcher
    follows ``answer_type`` (auto: ``choice`` when ``choices`` are given, else maths). ``integer_answers``:
    ``"value"`` (default) matches any answer by value, ``"literal"`` wants an integer literal for an
    integer gold answer, as MathRuler (EasyR1's and MMR1's grader) does (:func:`is_equivalent`)."""

    def __init__(self, *, integer_answers: str = "value") -> None:
        if integer_answers not in INTEGER_ANSWERS:
            raise ValueError(f"integer_answers must be one of {', '.join(INTEGER_ANSWERS)}, got {integer_answers!r}")
        self.integer_answers = integer_answers

    def __call__(self, samples: Sequence[str], prompts=None, metadata: Optional[Sequence[Mapping]] = None):
        metadata = _check_batch(samples, prompts, metadata)
        score = functools.partial(score_accuracy, integer_answers=self.integer_answers)
        return {"accuracy": _per_sample(score, samples, metadata)}


@REWARDS.register("format", samples="text")
class FormatReward:
    """``{"format": 1.0 | 0.0}`` by :func:`format_ok`; needs no gold answer."""

    def __call__(self, samples: Sequence[str], prompts=None, metadata: Optional[Sequence[Mapping]] = None):
        if prompts is not None and len(prompts) != len(samples):
            raise ValueError(f"got {len(samples)} samples and {len(prompts)} prompts")
        return {"format": _per_sample(lambda s, _: float(format_ok(s)), samples, [None] * len(samples))}


@REWARDS.register("verifiable", samples="text")
class VerifiableReward:
    """``(1 - format_weight) * accuracy + format_weight * format``, plus both parts.

    ``format_weight`` defaults to 0.1, EasyR1's ``math.py`` default (MMR1's ``0.9/0.1``);
    ``integer_answers`` as :class:`AccuracyReward` takes it.
    """

    def __init__(self, *, format_weight: float = 0.1, integer_answers: str = "value") -> None:
        if not 0.0 <= format_weight <= 1.0:
            raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
        self.format_weight = float(format_weight)
        self._accuracy, self._format = AccuracyReward(integer_answers=integer_answers), FormatReward()

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
