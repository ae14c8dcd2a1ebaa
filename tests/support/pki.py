"""A development PKI for tests: the `mgms certs init` files plus certificates that must be
refused (signed by another CA; signed by our CA for a subject the allow-list does not name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.north.certs import DevPki, init_dev_pki, issue, load_issuer, make_ca, write_pair


@dataclass(frozen=True)
class PkiFiles:
    dev: DevPki
    #: (cert, key) from a CA nobody trusts
    stranger: tuple[Path, Path]
    #: (cert, key) from our CA, subject "intruder" which no allow-list names
    intruder: tuple[Path, Path]

    def pair(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a dev party: gateway, ams, operator or broker."""
        return self.dev[name], self.dev[f"{name}-key"]

    @property
    def ca(self) -> Path:
        return self.dev.ca


def make_test_pki(directory: Path) -> PkiFiles:
    dev = init_dev_pki(directory)
    other_ca = make_ca("Some other CA")
    write_pair(directory, "other-ca", other_ca)
    stranger = write_pair(directory, "stranger", issue(other_ca, "ams"))
    ours = load_issuer(dev.ca, dev["ca-key"])
    intruder = write_pair(directory, "intruder", issue(ours, "intruder"))
    return PkiFiles(dev, stranger, intruder)
