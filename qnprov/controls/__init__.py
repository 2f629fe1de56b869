"""Hardening controls: the catalogue, ``qnprov verify``, reports, traceability, DNS records.

The catalogue (``data/controls.yaml``) is the single source of truth. The packaged
testinfra suite (``suite/``) checks each control on a real host; verify runs it,
aggregates results by control ID and renders JSON, JUnit and HTML reports.
"""
