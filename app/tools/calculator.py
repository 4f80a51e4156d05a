"""Arithmetic without `eval`: an expression is parsed to Python's AST and only numbers,
arithmetic operators and a few math functions are evaluated."""

import ast
import math
import operator
from collections.abc import Callable

from app.errors import ToolArgumentError

MAX_EXPRESSION_CHARS = 500
MAX_POWER = 10_000
"""Bound on an exponent, so `9 ** 9 ** 9` cannot hold a worker for minutes."""

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def evaluate(expression: str) -> float | int:
    """Evaluate an arithmetic expression such as `17 * (3 + 4) / sqrt(2)`.

    Raises:
        ToolArgumentError: the expression is not arithmetic, or cannot be computed.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        raise ToolArgumentError(
            f"give an expression of 1 to {MAX_EXPRESSION_CHARS} characters, such as '2 * (3 + 4)'"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolArgumentError(f"not an arithmetic expression: {expression!r}") from exc
    try:
        return _value(tree.body)
    except (ArithmeticError, ValueError) as exc:
        raise ToolArgumentError(f"cannot compute {expression!r}: {exc}") from exc


def _value(node: ast.expr) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ToolArgumentError("True and False are not numbers here")
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_POWER:
            raise ValueError(f"an exponent above {MAX_POWER} is refused")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_value(node.operand))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_value(a) for a in node.args))
    raise ToolArgumentError(
        f"only numbers, + - * / // % ** and {', '.join(sorted(_FUNCTIONS))} are allowed; "
        f"found {ast.unparse(node)!r}"
    )
