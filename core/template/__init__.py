"""The template language: text to nodes, compile-time variables resolved, nodes to Lark.

``parser`` reads the text into the nodes of ``nodes``; ``template`` holds
:class:`GuidanceTemplate` (variables resolved, capture names checked) and its slots,
:class:`GuidanceVariable`; ``lark`` writes nodes as llguidance's Lark dialect.
"""

from __future__ import annotations

from core.template.nodes import (
    GenNode,
    GrammarNode,
    GuidanceTemplateType,
    InterpolationNode,
    JsonNode,
    Node,
    RepeatNode,
    SelectNode,
    TextNode,
)
from core.template.template import GuidanceTemplate, GuidanceVariable

__all__ = [
    "GenNode",
    "GrammarNode",
    "GuidanceTemplate",
    "GuidanceTemplateType",
    "GuidanceVariable",
    "InterpolationNode",
    "JsonNode",
    "Node",
    "RepeatNode",
    "SelectNode",
    "TextNode",
]
