"""The API reference's pages: the document travels inside the page, and the renderer is the
pinned one or nothing."""

from __future__ import annotations

import json
import re

import pytest

from microlab.apidocs import ApiDocsError, _check_integrity, index, page
from microlab.topology import load_topology


def test_a_page_embeds_its_document_and_fetches_nothing():
    document = {"openapi": "3.1.0", "info": {"title": "orders", "version": "1"},
                "paths": {"/api/v1/orders": {"get": {
                    "summary": "a </script><script>alert(1)</script> trap"}}}}
    html = page("orders", document)
    assert "</script><script>alert" not in html  # a description cannot end the script early
    embedded = re.search(r"spec: (\{.*\}), dom_id", html).group(1)
    assert json.loads(embedded.replace("<\\/", "</")) == document
    assert "validatorUrl: null" in html  # Swagger UI's online validator badge is off
    assert not re.search(r"(src|href)=\"https?://", html)


def test_the_index_lists_the_gateway_first_and_links_every_page():
    documents = {name: {} for name in ("users", "gateway", "orders")}
    text = index(documents, load_topology())
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [row.split("]")[0] for row in rows] == ["| [gateway", "| [orders", "| [users"]
    assert "[orders](orders.html)" in text and "[orders.json](orders.json)" in text


def test_a_renderer_that_is_not_the_pinned_one_is_refused(tmp_path):
    tarball = tmp_path / "swagger-ui-dist.tgz"
    tarball.write_bytes(b"not the package we pinned")
    with pytest.raises(ApiDocsError, match="integrity"):
        _check_integrity(tarball)
