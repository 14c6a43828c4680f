"""The house rules that a reader relies on, checked on the source itself.

Import boundaries (STYLE.md 2.2) by walking each module's ``ast``, text-only
browser code by grepping ``static/js/``, and the README's commands against the
Makefile.
"""

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import django_websocket

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "static" / "js"

STDLIB = sys.stdlib_module_names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[str, list[str], bool]]:
    """Yield (module, imported names, at module level) for each import in *path*."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside its own package
                continue
            names = [alias.name for alias in node.names]
            yield node.module or "", names, id(node) in top_level


def root_of(module: str) -> str:
    return module.partition(".")[0]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", modules("django_websocket"), ids=relative)
def test_library_imports_neither_the_site_nor_httpx(path: Path) -> None:
    for module, _, top_level in imports(path):
        assert root_of(module) not in {"apps", "config", "httpx"}, module
        if root_of(module) == "redis":
            assert path.relative_to(ROOT).as_posix().endswith("groups/redis.py")
            assert not top_level, "import redis lazily, inside a function"


@pytest.mark.parametrize("path", modules("apps"), ids=relative)
def test_apps_import_django_the_public_api_and_their_own_modules(path: Path) -> None:
    app = path.relative_to(ROOT / "apps").parts[0]
    own = f"apps.{app}"
    third_party = {"django"} | ({"httpx"} if app == "livesearch" else set())
    for module, names, _ in imports(path):
        if module == "django_websocket":
            private = set(names) - set(django_websocket.__all__)
            assert not private, f"{module}: {sorted(private)} not in __all__"
        elif module.startswith("django_websocket."):
            pytest.fail(f"{relative(path)} imports the private {module}")
        elif root_of(module) == "apps":
            # apps/ratelimit.py is a module the apps share, not an app.
            shared = module == "apps.ratelimit" or (
                module == "apps" and set(names) == {"ratelimit"}
            )
            assert shared or module == own or module.startswith(own + "."), module
        else:
            assert root_of(module) in STDLIB | third_party, module


@pytest.mark.parametrize("path", modules("config"), ids=relative)
def test_config_imports_django_and_its_own_modules_only(path: Path) -> None:
    third_party = {"django", "jinja2", "markupsafe", "dj_database_url"}
    for module, _, _ in imports(path):
        if root_of(module) == "apps":
            assert module.endswith(".urls"), f"config imports app internals: {module}"
        elif module == "django_websocket.asgi":
            # The ASGI entry point, as django.core.wsgi is the WSGI one.
            assert path.name == "asgi.py", module
        elif root_of(module) != "config":
            assert root_of(module) in STDLIB | third_party, module


JS_FILES = sorted(JS.glob("*.js"))


@pytest.mark.parametrize("path", JS_FILES, ids=lambda path: path.name)
def test_browser_code_never_writes_html(path: Path) -> None:
    source = path.read_text()
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"]:
        assert sink not in source, f"{path.name} uses {sink}"


@pytest.mark.parametrize("path", JS_FILES, ids=lambda path: path.name)
def test_browser_code_keeps_the_console_and_window_clean(path: Path) -> None:
    source = path.read_text()
    assert not re.search(r"\bconsole\.\w+\(", source), f"{path.name} logs"
    assert not re.search(r"\bwindow\.\w", source), f"{path.name} uses window.*"


def test_only_socket_js_opens_websockets() -> None:
    openers = [path.name for path in JS_FILES if "new WebSocket" in path.read_text()]
    assert openers == ["socket.js"]


@pytest.mark.parametrize(
    "path",
    [path for path in JS_FILES if path.name not in {"socket.js", "dom.js"}],
    ids=lambda path: path.name,
)
def test_demo_modules_import_only_the_shared_modules(path: Path) -> None:
    sources = re.findall(r"""^import .* from ["'](.+)["'];$""", path.read_text(), re.M)
    assert sources, f"{path.name} imports nothing"
    assert set(sources) <= {"./socket.js", "./dom.js"}, sources


def test_templates_have_no_inline_scripts() -> None:
    for path in (ROOT / "templates").rglob("*.html"):
        for tag in re.findall(r"<script\b[^>]*>", path.read_text()):
            assert 'type="module" src=' in tag or "application/json" in tag, (
                f"{relative(path)}: {tag}"
            )


def test_readme_commands_are_makefile_targets() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    commands = set(
        re.findall(r"\bmake ([a-z][\w-]*)", (ROOT / "README.md").read_text())
    )
    assert commands, "the README shows no make command"
    assert commands <= targets, sorted(commands - targets)
