"""The flow language: YAML schema, loader with positions, conditions and piping."""

from bot.flow.loader import (
    FileReport,
    flow_from_definition,
    load_all,
    load_each,
    load_flow,
    validate_tree,
)
from bot.flow.model import Flow, Step

__all__ = [
    "FileReport",
    "Flow",
    "Step",
    "flow_from_definition",
    "load_all",
    "load_each",
    "load_flow",
    "validate_tree",
]
