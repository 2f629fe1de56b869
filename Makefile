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
# Long steps run in the background, each beside a stage it shares nothing with, since
# on CI's two cores each mostly waits on package installs or on services:
# - molecule (its own container, ports 20000-20999) beside the fresh-machine stage (a
#   container of its own, off the network after its bootstrap); once that stage has
#   passed, the single lab's first converge (`qnprov lab up`, ports 10xxx) starts beside
#   molecule's remaining steps, so the container tests' own `lab up` finds it converged;
# - the two-host lab (tests/labha, inventories/lab-ha: its own network, ports 11xxx/12xxx
#   and state directory, so its secrets, CA and status file never mix with the single
#   lab's): its bring-up and then its tests (log build/labha.log, printed at the end)
#   beside the container tests, which use the single lab and testbed containers of their
#   own.
# `qnprov image` first builds the base image the containers start from (on a fresh
# machine; a no-op when it exists). Logs go to build/ and their ends are printed; a
# failure of any step fails the run (the tests' own `lab up` re-converges a lab that is
# up and reports a failed background bring-up itself). pytest runs with --durations so
# the slowest tests show.
CONTAINER_TEST_DIRS := tests/integration tests/testbed
LAB_HA_STATE ?= $(HOME)/.local/state/qnprov/lab-ha
test: bootstrap lint
	mkdir -p build
	$(BIN)/qnprov image
	( $(BIN)/molecule test -s default > build/molecule.log 2>&1 ) & mol=$$!; \
	$(BIN)/python scripts/fresh-stage.py; rc=$$?; lab=""; \
	if [ $$rc -eq 0 ]; then \
	  ( $(BIN)/qnprov lab up > build/lab-up.log 2>&1; echo "lab bring-up exit $$?" >> build/lab-up.log ) & lab=$$!; \
	fi; \
	wait $$mol; mrc=$$?; tail -n 40 build/molecule.log; echo "molecule exit $$mrc"; \
	if [ -n "$$lab" ]; then wait $$lab; tail -n 3 build/lab-up.log; fi; \
	[ $$rc -eq 0 ] && [ $$mrc -eq 0 ]
	( export QNPROV_STATE_DIR=$(LAB_HA_STATE); \
	  $(BIN)/qnprov lab up -i lab-ha > build/lab-ha-up.log 2>&1; echo "lab-ha bring-up exit $$?" >> build/lab-ha-up.log; \
	  $(BIN)/python scripts/pytest-guard.py -p no:cacheprovider --basetemp=build/labha-tmp --durations=10 \
	    tests/labha > build/labha.log 2>&1 ) & ha=$$!; \
	$(BIN)/python scripts/pytest-guard.py --durations=30 $(CONTAINER_TEST_DIRS); rc=$$?; \
	wait $$ha; harc=$$?; tail -n 3 build/lab-ha-up.log; cat build/labha.log; echo "lab-ha tests exit $$harc"; \
	[ $$rc -eq 0 ] && [ $$harc -eq 0 ]

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
