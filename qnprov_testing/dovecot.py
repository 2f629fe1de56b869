"""A minimal dovecot.conf for the testbed's containers: passwd-file users, maildir under /var/vmail.

No listener (``protocols =``): the testbed tests reach mail through ``doveadm`` only.
"""

from __future__ import annotations


def passwd_file_conf(*, namespace: bool = True, quota: bool = False) -> str:
    """Users in /etc/dovecot/users; ``namespace`` gives the INBOX namespace with ``/`` as the
    separator (as roles/dovecot does); ``quota`` loads the quota plugin with a maildir quota."""
    parts = ["protocols =\nssl = no\nmail_home = /var/vmail/%d/%n\nmail_location = maildir:~/Maildir\n"]
    if quota:
        parts.append("mail_plugins = $mail_plugins quota\nplugin {\n  quota = maildir:User quota\n}\n")
    if namespace:
        parts.append("namespace inbox {\n  inbox = yes\n  separator = /\n}\n")
    parts.append("passdb {\n  driver = passwd-file\n  args = /etc/dovecot/users\n}\n"
                 "userdb {\n  driver = passwd-file\n  args = /etc/dovecot/users\n}\n")
    return "".join(parts)
