"""``relayburnd compare``: models side by side per activity, from each request's tool calls.

Activity of a request (first match in this order, so a request that edits and
then runs the tests counts as editing):

=============  ==============================================================
editing        Edit, MultiEdit, Write, NotebookEdit, apply_patch, edit, write,
               patch, multiedit
delegation     Task, Agent (sub-agents), task, spawn_agent
shell          Bash, BashOutput, KillShell, shell, exec_command, local_shell,
               write_stdin, bash, unified_exec
web            WebFetch, WebSearch, webfetch, websearch, web_search
reading        Read, Grep, Glob, LS, NotebookRead, read, grep, glob, list,
               view_image, codesearch
planning       TodoWrite, TodoRead, ExitPlanMode, update_plan, todowrite, todoread
other-tools    any other tool (MCP servers ``mcp__*``, custom tools)
conversation   no tool call at all
=============  ==============================================================

Names are matched case-insensitively. Per model and activity: requests,
tokens (input + output + cache), output tokens, cost, cost per priced request
and output tokens per request; the ``all`` rows are the model's totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..records import Turn
from ..reports import model_label
from ..storage.base import Filter, StorageAdapter
from .load import billable_turns
from .render import Col, fmt_int, fmt_num, fmt_usd

ACTIVITY_ORDER = (
    "editing", "delegation", "shell", "web", "reading", "planning", "other-tools",
    "conversation",
)
_TOOLS: dict[str, tuple[str, ...]] = {
    "editing": ("edit", "multiedit", "write", "notebookedit", "apply_patch", "patch"),
    "delegation": ("task", "agent", "spawn_agent"),
    "shell": ("bash", "bashoutput", "killshell", "killbash", "shell", "exec_command",
              "local_shell", "write_stdin", "unified_exec"),
    "web": ("webfetch", "websearch", "web_search", "web_search_preview"),
    "reading": ("read", "grep", "glob", "ls", "notebookread", "list", "view_image",
                "codesearch"),
    "planning": ("todowrite", "todoread", "exitplanmode", "update_plan"),
}
TOOL_ACTIVITY: dict[str, str] = {name: cat for cat, names in _TOOLS.items() for name in names}
_RANK = {cat: i for i, cat in enumerate(ACTIVITY_ORDER)}


def tool_activity(name: str) -> str:
    return TOOL_ACTIVITY.get(name.lower(), "other-tools")


def turn_activity(turn: Turn) -> str:
    """The activity of one request (see the module docstring)."""
    if not turn.tool_calls:
        return "conversation"
    return min((tool_activity(c.name) for c in turn.tool_calls), key=_RANK.__getitem__)


@dataclass
class CompareRow:
    activity: str
    model: str
    requests: int = 0
    priced_requests: int = 0
    total_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, t: Turn) -> None:
        self.requests += 1
        self.total_tokens += t.total_tokens
        self.output_tokens += t.output_tokens
        if t.cost_usd is not None:
            self.priced_requests += 1
            self.cost_usd += t.cost_usd

    def as_dict(self) -> dict[str, Any]:
        return {
            "activity": self.activity,
            "model": self.model,
            "requests": self.requests,
            "total_tokens": self.total_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced_requests": self.requests - self.priced_requests,
            "cost_per_request": (self.cost_usd / self.priced_requests
                                 if self.priced_requests else None),
            "output_per_request": self.output_tokens / self.requests if self.requests else None,
        }


def compare_rows(adapter: StorageAdapter, flt: Filter) -> list[CompareRow]:
    """Rows per (activity, model), activity in ``ACTIVITY_ORDER`` then ``all``."""
    groups: dict[tuple[str, str], CompareRow] = {}
    for t in billable_turns(adapter, flt):
        model = model_label(t.model, t.speed)
        for activity in (turn_activity(t), "all"):
            row = groups.get((activity, model))
            if row is None:
                row = groups[(activity, model)] = CompareRow(activity, model)
            row.add(t)
    order = {cat: i for i, cat in enumerate((*ACTIVITY_ORDER, "all"))}
    return [groups[k] for k in sorted(groups, key=lambda k: (order[k[0]], k[1]))]


COLUMNS = [
    Col("activity", "Activity", right=False),
    Col("model", "Model", right=False),
    Col("requests", "Requests", fmt_int),
    Col("total_tokens", "Tokens", fmt_int),
    Col("cost_usd", "Cost (USD)", fmt_usd),
    Col("cost_per_request", "USD/request", fmt_usd),
    Col("output_per_request", "Output/request", fmt_num),
]
