"""Reports beyond ``summary``: sessions, model comparison by activity, tools, 5-hour blocks.

Each report reads through the ``StorageAdapter`` query API only (``turns``,
``user_turns``, ``tool_results``, ``relationships``, ``summary``), so it gives
the same numbers on every adapter; ``load.billable_turns`` applies the same
counting rules as ``summary`` (one row per request, sidechain replays of a
main-thread response not counted). One module per report computes plain rows;
``render`` prints them as a table, JSON or CSV.
"""
