"""Installation into a staging root, the unit as systemd-analyze sees it, and uninstall."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import __version__
from gateway.errors import ServiceError
from gateway.ops.install import Installer
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's wheel, built offline from a clean copy of the tree."""
    src = tmp_path_factory.mktemp("src")
    for name in ("gateway", "drivers", "firmware-sim"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "LICENSE", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheels")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(out), str(src)], check=True, capture_output=True)
    return out


@pytest.fixture
def staged(tmp_path: Path, wheelhouse: Path) -> Iterator[tuple[Path, Installer]]:
    root = tmp_path / "root"
    keys = root / "etc" / "mgms" / "keys"
    keys.mkdir(parents=True)
    (keys / "ams-client.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (keys / "ams-client.key").chmod(0o644)  # too open: the installer must tighten it
    installer = Installer(
        root=root,
        wheelhouse=wheelhouse,
        pip_args=["--no-deps"],  # the dependencies come from the test's own environment
    )
    yield root, installer


def run_installed(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point, with this environment's site-packages for dependencies."""
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    exe = root / "opt" / "mgms" / "current" / "bin" / "mgms"
    return subprocess.run(
        [str(exe), *args], env=env, cwd=root, capture_output=True, text=True, timeout=60
    )


def test_install_lays_out_the_service_with_safe_modes(staged: tuple[Path, Installer]) -> None:
    root, installer = staged
    installer.install()
    current = root / "opt" / "mgms" / "current"
    assert os.readlink(current) == f"releases/{__version__}"
    assert os.access(current / "bin" / "mgms", os.X_OK)
    unit = (root / "etc/systemd/system/mgms-gateway.service").read_text()
    assert "ExecStart=/opt/mgms/current/bin/mgms run --config /etc/mgms/gateway.yaml" in unit
    assert "@PREFIX@" not in unit
    assert (root / "etc/sysusers.d/mgms.conf").read_text().count("u     mgms") == 1
    assert "/etc/mgms/keys" in (root / "etc/tmpfiles.d/mgms.conf").read_text()
    assert (root / "etc/mgms/mappings/demo/modbus.yaml").is_file()

    assert mode(root / "etc/mgms") == 0o755
    assert mode(root / "etc/mgms/gateway.yaml") == 0o644
    assert mode(root / "etc/mgms/keys") == 0o700
    assert mode(root / "etc/mgms/keys/ams-client.key") == 0o600
    assert mode(root / "var/lib/mgms") == 0o750
    assert mode(root / "var/log/mgms") == 0o750
    # systemd-sysusers made the user in the staged root; tmpfiles gave it keys and state
    passwd = (root / "etc/passwd").read_text()
    [entry] = [ln for ln in passwd.splitlines() if ln.startswith("mgms:")]
    uid = int(entry.split(":")[2])
    assert entry.endswith(":/var/lib/mgms:/usr/sbin/nologin")
    for path in ("etc/mgms/keys", "etc/mgms/keys/ams-client.key", "var/lib/mgms"):
        assert (root / path).stat().st_uid == uid, path
    assert (root / "etc/mgms/gateway.yaml").stat().st_uid == 0  # config stays root's

    # the installed program runs and accepts the installed config
    where = run_installed(root, "check", str(root / "etc/mgms/gateway.yaml"))
    assert where.returncode == 0, where.stderr
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"])
    origin = subprocess.run(
        [str(current / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
        env=env,
        cwd=root,  # not the source tree, whose gateway/ would shadow the installed one
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(origin.strip()).resolve().is_relative_to(root / "opt/mgms/releases" / __version__)
    config = (root / "etc/mgms/gateway.yaml").read_text()
    assert "state_dir: /var/lib/mgms" in config and "- mappings/demo/modbus.yaml" in config


def test_upgrade_keeps_the_operators_config(staged: tuple[Path, Installer]) -> None:
    root, installer = staged
    installer.install()
    config = root / "etc/mgms/gateway.yaml"
    edited = config.read_text().replace("Demo microgrid (simulated)", "Site 7")
    config.write_text(edited)
    installer.install()
    assert config.read_text() == edited
    assert "Demo microgrid (simulated)" in (root / "etc/mgms/gateway.yaml.dist").read_text()
    assert not (root / "etc/mgms/mappings/demo/modbus.yaml.dist").exists()  # unchanged file


def test_uninstall_keeps_data_unless_purged(staged: tuple[Path, Installer]) -> None:
    root, installer = staged
    installer.install()
    (root / "var/lib/mgms/gateway.sqlite").write_bytes(b"state")
    installer.uninstall()
    for gone in (
        "opt/mgms",
        "etc/systemd/system/mgms-gateway.service",
        "etc/sysusers.d/mgms.conf",
        "etc/tmpfiles.d/mgms.conf",
    ):
        assert not (root / gone).exists(), gone
    for kept in (
        "etc/mgms/gateway.yaml",
        "etc/mgms/keys/ams-client.key",
        "var/lib/mgms/gateway.sqlite",
    ):
        assert (root / kept).exists(), kept
    installer.uninstall(purge=True)
    for gone in ("etc/mgms", "var/lib/mgms", "var/log/mgms"):
        assert not (root / gone).exists(), gone


def test_installer_needs_only_the_standard_library(tmp_path: Path, wheelhouse: Path) -> None:
    """`python3 -S` (no site-packages) runs the installer as the first step on a bare host."""
    root = tmp_path / "root"
    root.mkdir()
    cmd = [
        sys.executable,
        "-S",
        "-m",
        "gateway.ops.install",
        "install",
        "--root",
        str(root),
        "--wheelhouse",
        str(wheelhouse),
        "--no-deps",
        "--no-systemd",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (root / "opt/mgms/current/bin/mgms").exists()
    bad = subprocess.run(
        [*cmd[:6], str(tmp_path / "missing"), *cmd[7:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert f"install root {tmp_path / 'missing'} is not a directory" in bad.stderr


def test_incomplete_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"is incomplete: .*mgms-gateway\.service"):
        Installer(root=tmp_path, source=tmp_path).install()


def test_unit_verifies_clean(staged: tuple[Path, Installer], tmp_path: Path) -> None:
    root, installer = staged
    installer.install()
    # the unit as installed, pointing at the staged program so ExecStart really exists
    unit = tmp_path / "mgms-gateway.service"
    unit.write_text(installer.render_unit(root / "opt" / "mgms"))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, text=True
    )
    assert "Unknown key" in done.stderr  # the check above can see a mistake


def documented_exposure() -> float:
    match = re.search(r"exposure level of \*\*(\d+\.\d)\*\*", DEPLOYMENT_DOC.read_text())
    assert match, "docs/deployment.md must state the unit's exposure level"
    return float(match.group(1))


def exposure(unit: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_exposure_stays_at_or_below_the_documented_level(tmp_path: Path) -> None:
    unit = tmp_path / "mgms-gateway.service"
    unit.write_text(Installer().render_unit())
    level = exposure(unit)
    assert level <= documented_exposure(), f"exposure rose to {level}"
    # without its hardening the same unit rates far worse: the measurement is real
    bare = [
        ln
        for ln in unit.read_text().splitlines()
        if not re.match(r"(Protect|Private|Restrict|SystemCall|Capability|NoNew|Memory|Lock)", ln)
    ]
    unit.write_text("\n".join(bare) + "\n")
    assert exposure(unit) > level + 3
