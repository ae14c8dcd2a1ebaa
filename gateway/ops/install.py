"""Install and uninstall the gateway as a systemd service, into `/` or a staging root.

Standard library only: it runs with the system's python3 before the gateway's virtual
environment exists (`sudo ./scripts/install`, or `mgms install` from an installed copy).

Layout (FHS):

    /opt/mgms/releases/<version>/      virtual environment of one release
    /opt/mgms/current -> releases/<v>  what the unit runs; switching it is the upgrade
    /etc/systemd/system/mgms-gateway.service
    /etc/sysusers.d/mgms.conf          the `mgms` system user
    /etc/tmpfiles.d/mgms.conf          keys, state and log directories with their modes
    /etc/mgms/gateway.yaml             config (kept on upgrade; new default as .dist)
    /etc/mgms/mappings/                shipped mapping files (same rule)
    /etc/mgms/keys/                    0700, files 0600, owned by mgms
    /var/lib/mgms/                     state (SQLite store), 0750
    /var/log/mgms/                     0750

Uninstall removes the program, the unit and the snippets and keeps config, keys, state and
logs unless `--purge`; the system user stays (files elsewhere may still carry its id).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway import __version__
from gateway.errors import ServiceError

SOURCE = Path(__file__).resolve().parents[2]
UNIT = "mgms-gateway.service"
USER = "mgms"
EXTRAS = "protocols,flex,mqtt"

CONFIG_DIR = Path("etc/mgms")
KEYS_DIR = CONFIG_DIR / "keys"
STATE_DIR = Path("var/lib/mgms")
LOG_DIR = Path("var/log/mgms")
UNIT_PATH = Path("etc/systemd/system") / UNIT
SYSUSERS_PATH = Path("etc/sysusers.d/mgms.conf")
TMPFILES_PATH = Path("etc/tmpfiles.d/mgms.conf")


def _under(root: Path, path: Path | str) -> Path:
    return root / str(path).lstrip("/")


def _run(cmd: Sequence[str | Path], what: str) -> None:
    try:
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ServiceError(f"{what}: {cmd[0]} not found") from exc
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-5:]
        raise ServiceError(f"{what} failed (exit {exc.returncode}): {' | '.join(detail)}") from exc


def _systemd_running(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir()


@dataclass
class Installer:
    root: Path = Path("/")
    prefix: Path = Path("/opt/mgms")
    source: Path = SOURCE
    python: str = sys.executable
    wheelhouse: Path | None = None
    pip_args: Sequence[str] = ()
    systemd_tools: bool = True
    log: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.log.append(line)
        print(line)

    # -- paths -------------------------------------------------------------------------

    def at(self, path: Path | str) -> Path:
        return _under(self.root, path)

    @property
    def release(self) -> Path:
        return self.at(self.prefix / "releases" / __version__)

    # -- install -----------------------------------------------------------------------

    def install(self, enable: bool = False) -> None:
        self._check_source()
        self._venv()
        self._switch_current()
        self._systemd_files()
        self._config()
        self._directories()
        self._apply_systemd(enable)
        self.say(f"installed mgms-gateway {__version__} into {self.root}")

    def _check_source(self) -> None:
        needed = [
            self.source / "systemd" / UNIT,
            self.source / "systemd" / "mgms.sysusers",
            self.source / "systemd" / "mgms.tmpfiles",
            self.source / "config" / "demo.yaml",
            self.source / "mappings",
        ]
        if self.wheelhouse is None:
            needed.append(self.source / "pyproject.toml")
        missing = [str(p) for p in needed if not p.exists()]
        if missing:
            raise ServiceError(f"install source {self.source} is incomplete: {', '.join(missing)}")
        if not self.root.is_dir():
            raise ServiceError(f"install root {self.root} is not a directory")

    def _venv(self) -> None:
        release = self.release
        pip: list[str | Path]
        if release.exists():
            self.say(f"replacing {release}")
            shutil.rmtree(release)
        release.parent.mkdir(parents=True, exist_ok=True)
        venv_python = release / "bin" / "python"
        if self._has_pip():
            # the service's venv needs no pip of its own; creating one costs seconds
            _run([self.python, "-m", "venv", "--without-pip", release], "creating the venv")
            pip = [self.python, "-m", "pip", "--python", venv_python, "install", "-q"]
        else:
            _run([self.python, "-m", "venv", release], "creating the virtual environment")
            pip = [venv_python, "-m", "pip", "install", "-q"]
        if self.wheelhouse is not None:
            target = f"mgms-gateway[{EXTRAS}]=={__version__}"
            pip += ["--no-index", "--find-links", self.wheelhouse, *self.pip_args, target]
        else:
            pip += [*self.pip_args, f"{self.source}[{EXTRAS}]"]
        _run(pip, "installing the gateway into the virtual environment")
        self.say(f"virtual environment {release}")

    def _has_pip(self) -> bool:
        """pip 22.3+ (for --python) beside the interpreter that builds the venv."""
        probe = (
            "import pip,sys; sys.exit(tuple(map(int, pip.__version__.split('.')[:2])) < (22, 3))"
        )
        return subprocess.run([self.python, "-c", probe], capture_output=True).returncode == 0

    def _switch_current(self) -> None:
        current = self.at(self.prefix / "current")
        tmp = current.with_name("current.new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("releases") / __version__)
        os.replace(tmp, current)  # atomic: the unit sees the old or the new release
        self.say(f"{current} -> releases/{__version__}")

    def render_unit(self, prefix: Path | None = None) -> str:
        """The unit file with the install prefix in place."""
        unit = (self.source / "systemd" / UNIT).read_text(encoding="utf-8")
        return unit.replace("@PREFIX@", str(self.prefix if prefix is None else prefix))

    def _systemd_files(self) -> None:
        unit = self.render_unit()
        for path, text in (
            (UNIT_PATH, unit),
            (SYSUSERS_PATH, (self.source / "systemd" / "mgms.sysusers").read_text("utf-8")),
            (TMPFILES_PATH, (self.source / "systemd" / "mgms.tmpfiles").read_text("utf-8")),
        ):
            target = self.at(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            target.chmod(0o644)
            self.say(f"wrote {target}")

    def default_config(self) -> str:
        """The demo config, rewritten for the installed layout."""
        text = (self.source / "config" / "demo.yaml").read_text(encoding="utf-8")
        text, n_state = re.subn(r"(?m)^state_dir:.*$", f"state_dir: /{STATE_DIR}", text, count=1)
        text, n_maps = re.subn(r"(?m)^(\s*-\s*)\.\./mappings/", r"\1mappings/", text)
        if not (n_state and n_maps):
            raise ServiceError("config/demo.yaml: expected state_dir and ../mappings/ entries")
        header = (
            "# Installed by `mgms install` from the demo microgrid: edit it for your site,\n"
            "# check it with `mgms check /etc/mgms/gateway.yaml`, apply it with\n"
            "# `systemctl reload mgms-gateway`. See docs/deployment.md.\n"
        )
        return header + text

    def _config(self) -> None:
        config_dir = self.at(CONFIG_DIR)
        config_dir.mkdir(parents=True, exist_ok=True)
        config_dir.chmod(0o755)
        self._conffile(config_dir / "gateway.yaml", self.default_config())
        shipped = self.source / "mappings"
        for src in sorted(shipped.rglob("*")):
            if src.is_file():
                dst = config_dir / "mappings" / src.relative_to(shipped)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.parent.chmod(0o755)
                self._conffile(dst, src.read_text(encoding="utf-8"))

    def _conffile(self, target: Path, text: str) -> None:
        """Write a config file, never over the operator's edits: a differing one gets the
        new version beside it as `.dist`."""
        if target.exists() and target.read_text(encoding="utf-8") != text:
            dist = target.with_name(target.name + ".dist")
            dist.write_text(text, encoding="utf-8")
            dist.chmod(0o644)
            self.say(f"kept {target}; the new version is {dist.name}")
            return
        target.write_text(text, encoding="utf-8")
        target.chmod(0o644)

    def _directories(self) -> None:
        keys = self.at(KEYS_DIR)
        keys.mkdir(parents=True, exist_ok=True)
        keys.chmod(0o700)
        for item in keys.rglob("*"):  # keys are for the service's eyes only
            item.chmod(0o700 if item.is_dir() else 0o600)
        for path in (STATE_DIR, LOG_DIR):
            directory = self.at(path)
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o750)

    def _apply_systemd(self, enable: bool) -> None:
        """Create the user and own the directories (sysusers, tmpfiles work on a staging
        root too); reload and enable the unit only on a running system."""
        if not self.systemd_tools:
            self.say("skipped systemd-sysusers/systemd-tmpfiles (--no-systemd)")
            return
        root = f"--root={self.root}"
        _run(["systemd-sysusers", root, SYSUSERS_PATH.name], "creating the mgms user")
        _run(["systemd-tmpfiles", root, "--create", TMPFILES_PATH.name], "setting up directories")
        self.say(f"user {USER} and directory ownership set up")
        if _systemd_running(self.root):
            _run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
            if enable:
                _run(["systemctl", "enable", "--now", UNIT], f"enabling {UNIT}")
                self.say(f"enabled and started {UNIT}")

    # -- uninstall ---------------------------------------------------------------------

    def uninstall(self, purge: bool = False) -> None:
        if not self.root.is_dir():
            raise ServiceError(f"install root {self.root} is not a directory")
        if _systemd_running(self.root) and self.systemd_tools:
            subprocess.run(["systemctl", "disable", "--now", UNIT], check=False)
        for path in (UNIT_PATH, SYSUSERS_PATH, TMPFILES_PATH):
            target = self.at(path)
            if target.exists():
                target.unlink()
                self.say(f"removed {target}")
        prefix = self.at(self.prefix)
        if prefix.exists():
            shutil.rmtree(prefix)
            self.say(f"removed {prefix}")
        kept = [self.at(p) for p in (CONFIG_DIR, STATE_DIR, LOG_DIR)]
        if purge:
            for path in kept:
                if path.exists():
                    shutil.rmtree(path)
                    self.say(f"purged {path}")
        else:
            present = [str(p) for p in kept if p.exists()]
            if present:
                self.say(f"kept {', '.join(present)} (--purge removes them)")
        if _systemd_running(self.root) and self.systemd_tools:
            subprocess.run(["systemctl", "daemon-reload"], check=False)


def add_install_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"), help="install under this root")
    p.add_argument("--prefix", type=Path, default=Path("/opt/mgms"))
    p.add_argument("--python", default=sys.executable, help="interpreter for the venv")
    p.add_argument("--wheelhouse", type=Path, help="install offline from these wheels")
    p.add_argument("--no-deps", action="store_true", help="dependencies come from elsewhere")
    p.add_argument("--enable", action="store_true", help="enable and start the service")
    p.add_argument("--no-systemd", action="store_true", help="do not run systemd tools")


def add_uninstall_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"))
    p.add_argument("--prefix", type=Path, default=Path("/opt/mgms"))
    p.add_argument("--purge", action="store_true", help="also remove config, keys, state, logs")
    p.add_argument("--no-systemd", action="store_true", help="do not run systemd tools")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="install", description="Install the MGMS gateway as a systemd service"
    )
    sub = parser.add_subparsers(dest="action", required=True)
    add_install_arguments(sub.add_parser("install", help="install or upgrade"))
    add_uninstall_arguments(
        sub.add_parser("uninstall", help="remove the program; keep config, keys and state")
    )
    return parser


def run(args: argparse.Namespace) -> int:
    installer = Installer(
        root=args.root.resolve(),
        prefix=Path("/") / args.prefix,
        systemd_tools=not args.no_systemd,
    )
    try:
        if args.action == "install":
            installer.python = args.python
            installer.wheelhouse = args.wheelhouse.resolve() if args.wheelhouse else None
            installer.pip_args = ["--no-deps"] if args.no_deps else []
            installer.install(enable=args.enable)
        else:
            installer.uninstall(purge=args.purge)
    except (ServiceError, OSError) as exc:
        print(f"mgms {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
