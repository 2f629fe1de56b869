"""Agencies and mail accounts in the directory: plan and apply from HR data (docs/directory.md).

Pure core: ``models``, ``names``, ``inputs``, ``planner``, ``purge``, ``dns``.
Edges: ``ldapio`` and ``wire`` (LDAP), ``settings`` (inventory/lab), ``cli`` (typer).
"""
