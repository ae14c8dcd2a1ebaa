from __future__ import annotations

import re

from gateway.smartapi import docgen, shapes
from gateway.smartapi.codec import decode, parse


def test_profile_document_examples_are_the_codecs() -> None:
    text = docgen.DOC.read_text(encoding="utf-8")
    assert sorted(docgen.examples_in(text)) == sorted(docgen.EXAMPLES)
    assert docgen.render(text) == text, "run: python -m gateway.smartapi.docgen"


def test_every_example_in_the_document_decodes_and_conforms() -> None:
    text = docgen.DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- example: ([a-z\-]+) -->\n```turtle\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 4
    for name, turtle in blocks:
        assert decode(turtle.encode(), "text/turtle") == docgen.EXAMPLES[name]()
        shapes.validate(parse(turtle.encode(), "text/turtle"))
