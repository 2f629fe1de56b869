"""Test support for qnprov: throwaway services and data for tests, benchmarks and molecule.

Not part of the runtime package: the wheel the ``qnprov_milter`` role builds for the mail
hosts contains ``qnprov`` only (``[tool.setuptools.packages.find]`` in pyproject.toml).
This package is imported from the source tree: pytest puts the project root on
``sys.path`` (``pythonpath`` in pyproject.toml), the benchmarks insert it themselves, and
molecule runs ``python -m qnprov_testing.molecule_verify`` from the project root.

* :mod:`qnprov_testing.slapd`: a throwaway slapd on loopback with the project's schema and ACLs;
* :mod:`qnprov_testing.postfix`: a throwaway Postfix on loopback, with or without the milter;
* :mod:`qnprov_testing.synthetic`: deterministic agencies and rosters;
* :mod:`qnprov_testing.molecule_verify`: molecule's verify step;
* :mod:`qnprov_testing.cli`: ``python -m qnprov`` as the tests run it (``--json`` read back),
  and the IMAP fetch-and-delete the lab's mail-flow tests share;
* :mod:`qnprov_testing.dovecot`: the testbed containers' minimal dovecot.conf;
* :mod:`qnprov_testing.certs`: a server certificate shaped as roles/common's lab CA issues one.
"""
