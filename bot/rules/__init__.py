"""YAML rules: load and validate a directory, compile it, evaluate events."""

from bot.rules.compiled import Rule, RuleSet
from bot.rules.engine import RuleEngine, WindowState
from bot.rules.loader import load_ruleset
from bot.rules.schema import RuleSpec, parse_duration

__all__ = ["Rule", "RuleEngine", "RuleSet", "RuleSpec", "WindowState",
           "load_ruleset", "parse_duration"]
