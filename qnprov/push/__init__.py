"""``qnprov push``: day-2 operations with pyinfra, the second engine beside Ansible.

The same inventory (:mod:`qnprov.inventory`), the same variables and the same
``templates/`` as the roles, reached over the same SSH connection (:mod:`.remote`), so a
push and a ``qnprov deploy`` agree byte for byte and neither reports the other's work as
a change. Modules: :mod:`.files` (what the role would write), :mod:`.remote` (pyinfra
hosts), :mod:`.apply` (one host's staged-validate-publish-reload transaction),
:mod:`.run` (the hosts, each its own result), :mod:`.blocks` (the emergency block list),
:mod:`.dkim` with :mod:`.dkimkeys` and :mod:`.dkimhost` (``push dkim rotate``) and
:mod:`.cli` (``push_app``).
"""
