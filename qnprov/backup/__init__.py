"""Backups: the controller's side of ``qnprov backup`` (docs/backup.md).

The engine is restic, run on each host by the backup role's script
(``templates/backup/qnprov-backup.py.j2``); this package starts it through
Ansible (``ops``) and reads the JSON report each host sends back (``reports``).
"""
