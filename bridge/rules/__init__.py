"""Mapping rules: campus events -> MobileReceiverMessageEvents (schema, loader, matcher, render; pure).

A rule (YAML) matches on `topics` and a JMESPath `when`, optionally fans out over `for_each`, and renders
`message` templates (`{{ expr }}`) against the context `event`, `item`, `kafka`, `headers`.
Everything is parsed and checked at load: `load_rules(settings)` raises ConfigError listing every problem
(file, rule, field, line). At run time `RuleSet.map(event, meta)` never raises: it returns a MapResult
of `Mapped` messages and `MappingFailure` values. See docs/writing-rules.md for the user-facing contract.
"""

from bridge.rules.coerce import RenderError, parse_millis
from bridge.rules.evaluators import Compiler
from bridge.rules.functions import RuleFunctions
from bridge.rules.jmes import ExpressionError, is_true
from bridge.rules.keys import NAMESPACE, idempotency_key, record_key, uuid5_text
from bridge.rules.loader import compile_rules, load_rules
from bridge.rules.ruleset import RuleSet
from bridge.rules.schema import Rule

__all__ = [
    "NAMESPACE",
    "Compiler",
    "ExpressionError",
    "RenderError",
    "Rule",
    "RuleFunctions",
    "RuleSet",
    "compile_rules",
    "idempotency_key",
    "is_true",
    "load_rules",
    "parse_millis",
    "record_key",
    "uuid5_text",
]
