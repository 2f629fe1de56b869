# The two commands of the README:
#   make lab    install everything, then deploy the lab and smoke-test it
#   make test   install everything, then lint and run the whole test suite
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_ROLES_PATH := $(CURDIR)/roles
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: lab test bootstrap lint fresh-stage molecule clean

lab: bootstrap
	$(BIN)/qnprov lab up

# The fresh-machine stage runs every test directory that needs no container; the host
# then runs the ones that do (CONTAINER_TEST_DIRS in qnprov/freshstage.py), so each test
# runs once. Every pytest run goes through scripts/pytest-guard.py: a run that collected
# nothing (exit 5) or skipped every test fails; the fresh stage judges its runs the same way.
#
# The two-host lab (tests/labha, inventories/lab-ha) keeps its own state directory, so
# its secrets, CA and status file never mix with the single lab's. Its first converge
# (the longest step of the suite) runs while molecule runs, since both mostly wait on
# package installs; the lab-ha tests then find it up (their `lab up` re-converges it,
# which is quick when nothing changed). A failed background bring-up is not hidden: the
# tests' own `lab up` reports it.
CONTAINER_TEST_DIRS := tests/integration tests/testbed
LAB_HA_STATE ?= $(HOME)/.local/state/qnprov/lab-ha
test: bootstrap lint fresh-stage
	$(BIN)/python scripts/pytest-guard.py $(CONTAINER_TEST_DIRS)
	mkdir -p build
	( QNPROV_STATE_DIR=$(LAB_HA_STATE) $(BIN)/qnprov lab up -i lab-ha > build/lab-ha-up.log 2>&1; \
	  echo "lab-ha bring-up exit $$?" >> build/lab-ha-up.log ) & ha=$$!; \
	$(MAKE) molecule; rc=$$?; wait $$ha; tail -n 3 build/lab-ha-up.log; \
	QNPROV_STATE_DIR=$(LAB_HA_STATE) $(BIN)/python scripts/pytest-guard.py tests/labha || rc=1; \
	exit $$rc

bootstrap:
	./scripts/bootstrap.sh

lint:
	$(BIN)/ruff check qnprov qnprov_testing tests benchmarks scripts
	$(BIN)/mypy qnprov qnprov_testing
	$(BIN)/yamllint -s roles playbooks inventories molecule .yamllint .ansible-lint
	$(BIN)/ansible-lint --profile production roles playbooks

# scripts/bootstrap.sh in a pristine Debian 12 container from the project's base image,
# then lint and every test that needs no container, there, on loopback only.
fresh-stage: bootstrap
	$(BIN)/python scripts/fresh-stage.py

molecule:
	$(BIN)/molecule test -s default

clean:
	$(BIN)/qnprov lab down --purge || true
