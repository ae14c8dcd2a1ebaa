"""A development PKI for tests: the `mgms certs init` files plus certificates that must be
refused (signed by another CA; signed by our CA for a subject the allow-list does not name)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.north.certs import DevPki, init_dev_pki, issue, load_issuer, make_ca, write_pair


@dataclass(frozen=True)
class PkiFiles:
    dev: DevPki
    #: (cert, key) from a CA nobody trusts
    stranger: tuple[Path, Path]
    #: the CA nobody trusts, to issue more foreign certificates
    other_ca: tuple[Path, Path]
    #: (cert, key) from our CA, subject "intruder" which no allow-list names
    intruder: tuple[Path, Path]

    def pair(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a dev party: gateway, ams, operator or broker."""
        return self.dev[name], self.dev[f"{name}-key"]

    @property
    def ca(self) -> Path:
        return self.dev.ca

    def issue(self, stem: str, common_name: str, **kwargs: Any) -> tuple[Path, Path]:
        """(cert, key) `stem` from our CA: `gateway.north.certs.issue` arguments, e.g. an
        expired certificate (`not_before` in the past, negative `days`), a not yet valid one
        (`not_before` in the future) or one for other `hosts`."""
        ours = load_issuer(self.dev.ca, self.dev["ca-key"])
        return write_pair(self.dev.directory, stem, issue(ours, common_name, **kwargs))

    def issue_foreign(self, stem: str, common_name: str) -> tuple[Path, Path]:
        """(cert, key) `stem` for `common_name` from the CA nobody trusts."""
        other = load_issuer(*self.other_ca)
        return write_pair(self.dev.directory, stem, issue(other, common_name))


def make_test_pki(directory: Path) -> PkiFiles:
    dev = init_dev_pki(directory)
    other_ca = make_ca("Some other CA")
    other = write_pair(directory, "other-ca", other_ca)
    stranger = write_pair(directory, "stranger", issue(other_ca, "ams"))
    ours = load_issuer(dev.ca, dev["ca-key"])
    intruder = write_pair(directory, "intruder", issue(ours, "intruder"))
    return PkiFiles(dev, stranger, other, intruder)
