"""The direction of imports between the house's layers, read from the source (ast): a change that makes an
arrow run back up fails here."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name the file imports (at the top or inside functions), with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # ``from cdp import segments`` names a module too
                yield node.lineno, f"{node.module}.{alias.name}"


def offending(folder: str, forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules(folder)
        for line, name in imports(path)
        if name == forbidden or name.startswith(forbidden + ".")
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("cdp/ml", "cdp.segments"),  # ML is an algorithm library; ML segments live in cdp/segments
        ("cdp/ingest", "cdp.segments"),  # ingest reaches segments only through the facade's hooks
        ("cdp/ml", "cdp.webhooks"),
        ("cdp/ingest", "cdp.webhooks"),
        ("cdp/segments", "cdp.webhooks"),  # everyone writes notifications through cdp.outbox
    ],
)
def test_lower_layers_do_not_import_higher_ones(folder: str, forbidden: str) -> None:
    assert offending(folder, forbidden) == []


def test_api_uses_only_the_facade_and_errors() -> None:
    """``from cdp import CDP`` and ``from cdp.errors import ...``: no module of the library by its path."""
    submodules = {p.stem for p in (ROOT / "cdp").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}

    def allowed(name: str) -> bool:
        parts = name.split(".")
        if parts[0] != "cdp" or name == "cdp" or parts[1] == "errors":
            return True
        return len(parts) == 2 and parts[1] not in submodules  # a name the facade exports

    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules("api")
        for line, name in imports(path)
        if not allowed(name)
    ]
    assert wrong == []


def test_api_imports_itself_relatively() -> None:
    """``api/`` ships inside the wheel under another name: it must not import itself as ``api``."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules("api")
        for line, name in imports(path)
        if name == "api" or name.startswith("api.")
    ]
    assert wrong == []


@pytest.mark.parametrize("module", ["cdp/duckdb_worker.py", "cdp/outbox.py", "cdp/chunks.py"])
def test_shared_infrastructure_imports_no_domain(module: str) -> None:
    domains = ("cdp.segments", "cdp.ml", "cdp.identity", "cdp.ingest", "cdp.webhooks", "cdp.core")
    wrong = [name for _, name in imports(ROOT / module) if name.startswith(domains)]
    assert wrong == []


def test_every_route_declares_its_response_model(tmp_path: Path) -> None:
    """``/openapi.json`` describes every answer: a named model (a ``$ref``), a picture, or 204 No Content."""
    from api import create_app
    from cdp import Settings

    document = create_app(Settings(db=tmp_path / "cdp.db", scheduler_enabled=False)).openapi()
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    assert len(operations) >= 40
    undescribed = []
    for path, method, op in operations:
        success = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        if set(success) == {"204"}:
            continue
        content = next(iter(success.values())).get("content", {})
        described = "$ref" in content.get("application/json", {}).get("schema", {}) or any(
            kind.startswith("image/") for kind in content
        )
        if not described:
            undescribed.append(f"{method.upper()} {path}")
    assert undescribed == []
