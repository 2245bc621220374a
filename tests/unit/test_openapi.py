"""The OpenAPI document names every route the app has, with the methods it has, and follows the
rules the routes use. (The schemathesis test in tests/acceptance checks the answers against it.)"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from quart_trio import QuartTrio

from conveyor import limits, validation
from conveyor.config import Config
from conveyor.handlers import build_registry
from conveyor.metrics import Metrics
from conveyor.web.app import body_budget, create_app
from conveyor.web.context import Services
from conveyor.web.openapi import NOT_DESCRIBED, document

CONFIG = Config()
REGISTRY = build_registry(CONFIG)
DOC = document(REGISTRY, "0")


def _quart_app() -> QuartTrio:
    fake: Any = SimpleNamespace(of=lambda tenant: None)
    svc = Services(config=CONFIG, registry=REGISTRY, jobs=fake, schedules=fake, tenants=fake, auth=fake, limits=fake,
                   hub=fake, metrics=Metrics(), node=fake)
    app: Any = create_app(svc, body_budget(CONFIG.body_budget_bytes, CONFIG.max_body_bytes, CONFIG.auth))
    while not isinstance(app, QuartTrio):  # under the WebSocket send keeper, access log, body gate
        app = app.app
    return app


def test_the_document_names_every_route_with_its_methods() -> None:
    routes: dict[str, set[str]] = {}
    for rule in _quart_app().url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule in NOT_DESCRIBED:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + _camel(m.group(1)) + "}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods or () if m not in ("HEAD", "OPTIONS"))
    described = {path: set(ops) for path, ops in DOC["paths"].items()}
    assert described == routes


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def test_the_document_follows_the_rules_the_routes_use() -> None:
    schemas = DOC["components"]["schemas"]
    submission = schemas["JobSubmission"]
    assert tuple(submission["properties"]) == validation.JOB_FIELDS
    assert submission["additionalProperties"] is False  # unknown fields are a 400
    assert submission["properties"]["type"]["enum"] == REGISTRY.names()
    assert submission["properties"]["maxAttempts"]["maximum"] == validation.MAX_ATTEMPTS_LIMIT
    assert schemas["Batch"]["properties"]["jobs"]["maxItems"] == validation.MAX_BATCH
    assert set(schemas["Limits"]["properties"]) == set(limits.FIELDS)
    listing = {p["name"]: p["schema"] for p in DOC["paths"]["/jobs"]["get"]["parameters"]}
    assert listing["limit"]["maximum"] == validation.LIST_LIMIT_MAX
    # every reference resolves
    text = repr(DOC)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in DOC["components"][ref[0]], ref
    # and every operation answers its errors in the one error shape
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
