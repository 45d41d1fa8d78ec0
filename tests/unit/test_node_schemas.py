"""Every node's schema (ids, input names, types, order and widget settings, outputs) is the one saved workflows
were made with: tests/support/data/node_schemas.json, written from the pack before it was reorganised (issue 22).

A deliberate change to a node (a new input, last) rewrites the snapshot from the code that has it:
``python tests/support/tools/node_schemas.py . tests/support/data/node_schemas.json``, and the diff is reviewed with the change.
"""

import json

from comfyui_mova.nodes.catalog import ALL_NODES
from mova_pack import DATA
from tools.node_schemas import schemas

SNAPSHOT = DATA / "node_schemas.json"


def test_node_ids_and_menu_order_unchanged():
    assert list(schemas(ALL_NODES)) == list(json.loads(SNAPSHOT.read_text()))


def test_every_node_schema_unchanged():
    saved = json.loads(SNAPSHOT.read_text())
    now = schemas(ALL_NODES)
    for node_id, schema in saved.items():
        assert now[node_id]["inputs"] == schema["inputs"], f"{node_id}: inputs differ from {SNAPSHOT.name}"
        assert now[node_id]["outputs"] == schema["outputs"], f"{node_id}: outputs differ from {SNAPSHOT.name}"
        assert now[node_id] == schema, node_id
