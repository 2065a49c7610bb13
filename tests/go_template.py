"""A renderer for the small subset of Go's text/template that Ollama TEMPLATEs here use (for tests).

Supports: {{ .Field }}, {{ if .Field }} / {{ if eq .Field "x" }} … {{ else }} … {{ end }},
{{ range .Messages }} … {{ end }}, and the `{{-` / `-}}` whitespace trims.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


def _tokens(template: str):
    pos, out = 0, []
    for m in TOKEN.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if out and out[-1][0] == "trim_next":
            out.pop()
            text = text.lstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        if m.group(3):
            out.append(("trim_next", ""))
        pos = m.end()
    tail = template[pos:]
    if out and out[-1][0] == "trim_next":
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    return out


def _parse(tokens, i=0, stop=("end",)):
    nodes = []
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "text":
            nodes.append(("text", value))
            i += 1
        elif value in stop or value == "else":
            return nodes, i
        elif value.startswith("if "):
            body, i = _parse(tokens, i + 1, ("end",))
            other = []
            if tokens[i][1] == "else":
                other, i = _parse(tokens, i + 1, ("end",))
            nodes.append(("if", value[3:], body, other))
            i += 1
        elif value.startswith("range "):
            body, i = _parse(tokens, i + 1, ("end",))
            nodes.append(("range", value[6:], body))
            i += 1
        else:
            nodes.append(("field", value))
            i += 1
    return nodes, i


def _value(expr: str, scope: dict, root: dict):
    if expr.startswith("eq "):
        left, right = expr[3:].split(" ", 1)
        return _value(left, scope, root) == right.strip('"')
    name = expr.lstrip(".")
    return scope.get(name, root.get(name, ""))


def _render(nodes, scope, root) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(str(_value(node[1], scope, root)))
        elif node[0] == "if":
            out.append(_render(node[2] if _value(node[1], scope, root) else node[3], scope, root))
        elif node[0] == "range":
            for item in _value(node[1], scope, root):
                out.append(_render(node[2], {k.capitalize(): v for k, v in item.items()}, root))
    return "".join(out)


def render(template: str, **values) -> str:
    nodes, _ = _parse(_tokens(template))
    return _render(nodes, values, values)
