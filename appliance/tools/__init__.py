"""Tools beside the daemons: `ddc demo`, `ddc bench`, `ddc status` and what they share.

Nothing in the daemons' library imports from here (tests/unit/test_import_graph.py
holds that); only appliance/cli.py reaches in, lazily, inside its command functions,
so `ddc run` never loads a tool.
"""
