# The two commands of the README:
#   make lab    install everything, then deploy the lab and smoke-test it
#   make test   install everything, then lint and run the whole test suite
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: lab test bootstrap lint molecule clean

lab: bootstrap
	$(BIN)/qnprov lab up

# pytest exits 5 when it collects nothing; make treats that as the failure it is.
test: bootstrap lint
	$(BIN)/pytest tests
	$(MAKE) molecule

bootstrap:
	./scripts/bootstrap.sh

lint:
	$(BIN)/ruff check qnprov tests benchmarks
	$(BIN)/mypy qnprov
	$(BIN)/yamllint -s roles playbooks inventories molecule .yamllint .ansible-lint
	$(BIN)/ansible-lint --profile production roles playbooks

molecule:
	$(BIN)/molecule test -s default

clean:
	$(BIN)/qnprov lab down --purge || true
