"""Mapping rules: campus events -> MobileReceiverMessageEvents (schema, loader, matcher, render; pure).

A rule (YAML) matches on `topics` and a JMESPath `when`, optionally fans out over `for_each`, and renders
`message` templates (`{{ expr }}`) against the context `event`, `item`, `kafka`, `headers`.
Everything is parsed and checked at load: `load_rules(settings)` raises ConfigError listing every problem
(file, rule, field, line). At run time `RuleSet.map(event, meta)` never raises: it returns a MapResult
of `Mapped` messages and `MappingFailure` values. See README.md, "Writing rules", for the user-facing contract.

    loader      settings and rule files -> RuleSet (the only module that reads files)
    schema      one raw rule -> Rule, or ConfigIssues naming file, path, rule and line
    fields      a rule's `message:` block -> CompiledMessage (constants checked at load)
    template    `{{ expr }}` templates, pre-split
    jmes        JMESPath parsing and analysis: names read, plain paths, `when` guards
    evaluators  JMESPath AST -> closures with jmespath's exact semantics
    pygen       JMESPath AST -> Python statements (generated code for `when` and templates)
    codegen     CompiledMessage -> one generated function per rule
    coerce      rendered values -> API field values; RenderError
    functions   the custom JMESPath functions (to_millis, lower, upper, default, mask)
    keys        msg_key UUIDs (deterministic UUIDv5)
    ruleset     RuleSet.map, the engine
    testcases   `bridge test` cases: parse, run, compare (no I/O)
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
