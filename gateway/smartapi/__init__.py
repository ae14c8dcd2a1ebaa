"""Smart API semantic layer: field data and flexibility information as linked data.

- `vocab`: namespaces and terms; `messages`, `flexibility`: the frozen message model;
- `codec` (with `encode`, `decode`, `tree`, `oxparse`, `legacy`, `check`, `shapes`):
  model <-> Turtle / JSON-LD / N-Triples, Smart API 1.1 input forms, SHACL shapes and the
  fast check that agrees with them;
- `fielddata`: the microgrid and its live state as entities and value objects;
- `access`: the `POST /smartapi/v1.0e1.0/access/` core (`AccessService.handle`) and its
  aiohttp route;
- `xsd`: the XSD 1.1 lexical forms of every literal read from the wire, and its value;
- `security`: keys and trusted peers, the secure profile (canonical-graph signatures,
  AES-GCM parts, replay guard) and the Smart API 1.1 multipart scheme.

The profile is written down in docs/smartapi-profile.md.
"""


def keep_literals_as_written() -> None:
    """rdflib rewrites a typed literal's text through Python's conversions when it builds it
    (`"1_0"^^xsd:double` would become "10.0" before anyone could see it); the gateway keeps
    the text as received, so that `xsd` judges what the peer sent. The switch is global
    and pyshacl turns it back on after each validation, so parsing re-asserts it; `vocab`,
    which every module building RDF terms imports, asserts it first."""
    import rdflib  # here, not at the top: a site without `north:` never loads rdflib

    rdflib.NORMALIZE_LITERALS = False
