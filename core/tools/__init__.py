"""Tool calls: OpenAI's ``tools`` written in a model family's own format.

:mod:`~core.tools.families` holds one entry per family (taken from its chat template);
:mod:`~core.tools.request` checks a request; :mod:`~core.tools.grammar` writes its Lark grammar
(arguments by :mod:`~core.tools.arguments`); :mod:`~core.tools.reader` reads a turn's text back as
the variables ``content`` and ``tool_calls``.
"""

from __future__ import annotations

from core.tools.families import TOOL_FORMATS, Reasoning, ToolFormat, tool_format
from core.tools.grammar import tools_lark
from core.tools.reader import ToolReader
from core.tools.request import Tool, ToolRequest, ToolsOptions, tool_request

__all__ = [
    "Reasoning",
    "TOOL_FORMATS",
    "Tool",
    "ToolFormat",
    "ToolReader",
    "ToolRequest",
    "ToolsOptions",
    "tool_format",
    "tool_request",
    "tools_lark",
]
