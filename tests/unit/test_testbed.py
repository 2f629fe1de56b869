"""Pure parts of the testbed: podman configuration, mirror discovery, run arguments."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

from qnprov import testbed


def test_containers_conf_gets_runc_ulimits_and_cgroupfs():
    text = testbed.render_containers_conf("")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    assert parser["engine"]["runtime"] == '"runc"'
    assert parser["engine"]["cgroup_manager"] == '"cgroupfs"'
    assert "nproc=4096:4096" in parser["containers"]["default_ulimits"]
    assert "nofile=20000:20000" in parser["containers"]["default_ulimits"]


def test_containers_conf_keeps_foreign_keys_and_is_stable():
    current = '[engine]\nruntime = "crun"\nnum_locks = 4096\n[network]\nnetwork_backend = "netavark"\n'
    once = testbed.render_containers_conf(current)
    assert 'num_locks = 4096' in once
    assert 'network_backend = "netavark"' in once
    assert 'runtime = "runc"' in once and "crun" not in once
    assert testbed.render_containers_conf(once) == once, "rendering twice must change nothing"


def test_mirror_from_deb822_sources(tmp_path: Path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n")
    assert testbed.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources(tmp_path: Path):
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bookworm main\n")
    assert testbed.debian_mirror(tmp_path) == "http://old.example/debian"


def test_mirror_default_when_nothing_matches(tmp_path: Path):
    assert testbed.debian_mirror(tmp_path) == testbed.DEFAULT_MIRROR


def test_systemd_run_args_publish_on_loopback_and_boot_init():
    args = testbed.systemd_run_args("c1", hostname="h.example", publish=["127.0.0.1:10025:25"])
    assert args[:4] == ["podman", "run", "-d", "--name"]
    assert "--systemd=always" in args
    assert args[args.index("-p") + 1] == "127.0.0.1:10025:25"
    assert args[-2:] == [testbed.IMAGE_REF, "/sbin/init"]


def test_systemd_run_args_give_the_container_the_roles_network_sysctls():
    args = testbed.systemd_run_args("c1")
    given = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--sysctl")
    role = testbed.container_net_sysctls()
    assert role and {k: int(v) for k, v in given.items()} == role
    assert role["net.ipv4.conf.all.rp_filter"] == 1
    # Global keys cannot be set per network namespace.
    assert not any(k.startswith("net.core.") for k in given)


def test_systemd_run_args_set_no_sysctls_in_a_shared_network_namespace():
    assert "--sysctl" not in testbed.systemd_run_args("c2", network="container:c1")
    assert "--sysctl" not in testbed.systemd_run_args("c3", sysctls={})


def test_build_image_is_skipped_when_the_version_matches():
    calls: list[list[str]] = []

    def fake_run(cmd, **_kw):
        calls.append(list(cmd))
        return subprocess.CompletedProcess(cmd, 0, stdout=testbed.IMAGE_VERSION + "\n", stderr="")

    assert testbed.build_image(run=fake_run) is False
    assert len(calls) == 1 and calls[0][:3] == ["podman", "image", "inspect"]


def test_missing_packages_reads_dpkg_status():
    def fake_run(cmd, **_kw):
        return subprocess.CompletedProcess(cmd, 1, stdout="podman ii \nrunc un \n", stderr="")

    assert testbed.missing_packages(["podman", "runc", "debootstrap"], run=fake_run) == ["runc", "debootstrap"]


def test_image_apt_sources_are_one_line_with_the_security_suite():
    """As Debian 12's installer writes them, so audit tools find the security suite (Lynis PKGS-7388)."""
    text = testbed._apt_sources("http://deb.debian.org/debian")
    assert text.splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
