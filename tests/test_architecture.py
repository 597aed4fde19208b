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


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_privately(tree: ast.AST) -> set[str]:
    """The ``_names`` a module defines: functions, classes, assigned names and ``self._attributes``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.id if isinstance(node, ast.Name) else node.attr)
    return {name for name in names if private(name)}


# Known and left to the identity work under way (cdp/identity/matching is being edited elsewhere): the
# matcher names its DuckDB views from the backend's counter. Remove the entry when it has a public name.
PRIVATE_USES_PENDING: set[str] = set()


def test_no_module_uses_another_modules_private_names() -> None:
    """A ``_name`` belongs to the module that defines it. Another module that needs it gets a public name
    (or the code moves): no ``from cdp.x import _name``, no ``module._name`` of one of our modules, and no
    ``thing._name`` where ``_name`` is defined only elsewhere in the house (``self._...`` and the names a
    module defines itself stay free; so do other libraries' ``_names``, such as a NamedTuple's ``_fields``)."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in modules("cdp") + modules("api")}
    own = {path: defined_privately(tree) for path, tree in trees.items()}
    ours = set().union(*own.values())
    wrong = []
    for path, tree in trees.items():
        where = path.relative_to(ROOT)
        ours_imported = {  # names bound to one of our modules: ``from cdp.demo import pools``, ``import cdp.x as y``
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "cdp")
            for alias in node.names
        } | {
            alias.asname or alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.split(".")[0] == "cdp"
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").split(".")[0] == "cdp"):
                wrong += [
                    f"{where}:{node.lineno} imports {a.name} from {node.module}" for a in node.names if private(a.name)
                ]
            elif isinstance(node, ast.Attribute) and private(node.attr):
                receiver = node.value
                if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
                    continue
                of_our_module = isinstance(receiver, ast.Name) and receiver.id in ours_imported
                elsewhere = node.attr in ours and node.attr not in own[path]
                pending = f"{where} uses {ast.unparse(node)}" in PRIVATE_USES_PENDING
                if (of_our_module or elsewhere) and not pending:
                    wrong.append(f"{where}:{node.lineno} uses {ast.unparse(node)}")
    assert wrong == []


def test_one_hook_convention() -> None:
    """Who follows what happened connects to a ``cdp.hooks.Hook``: no ``self.x: list[Callable[...]]`` of
    listeners spelled another way."""
    wrong = [
        f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node.target)}: {ast.unparse(node.annotation)}"
        for path in modules("cdp") + modules("api")
        if path != ROOT / "cdp" / "hooks.py"  # the Hook itself keeps its followers in a list
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Attribute)
        and ast.unparse(node.annotation).replace(" ", "").startswith(("list[Callable", "list[MergeHook"))
    ]
    assert wrong == []
