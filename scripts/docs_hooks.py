"""Generated parts of the documentation site, so reference pages cannot drift from the code.

Used as an mkdocs hook (`hooks:` in mkdocs.yml); each page marks where generated text goes
with an HTML comment:

    <!-- generated: openapi -->         the API reference, from the app's OpenAPI document
    <!-- generated: errors -->          error codes, from keystile.errors and web/errors.py
    <!-- generated: settings -->        every setting, from the Settings model + settings.toml
    <!-- generated: cli -->             every command and option, from keystile.cli's parser
    <!-- generated: tests S9 -->        the tests that name a security requirement
    <!-- generated: tests S34 planned=14 -->   ... or the issue that will implement it

Nothing here needs PostgreSQL or Redis: the app is created but never started.
Also runnable: `python scripts/docs_hooks.py openapi|errors|settings|tests` prints one part.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Markdown files outside docs/, published as pages of the site (page: source).
PUBLISHED = {
    "contributing.md": "CONTRIBUTING.md",
    "changelog.md": "CHANGELOG.md",
    "vulnerabilities.md": "SECURITY.md",
    "bench.md": "bench/README.md",
    "deploy-k8s.md": "deploy/k8s/README.md",
}
_LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")

_log = logging.getLogger("mkdocs.plugins.keystile")

_MARKER = re.compile(r"<!--\s*generated:\s*(?P<what>[\w-]+)(?P<args>[^>]*?)\s*-->")
_S_ID = re.compile(r"\bS([1-9][0-9]?)\b")
_S_RANGE = re.compile(r"\bS([1-9][0-9]?)\s*(?:-|\u2013|\.\.)\s*S([1-9][0-9]?)\b")
_REQUIREMENT_HEADING = re.compile(r"^#{2,4} S([1-9][0-9]?)\b", re.MULTILINE)


# --- security requirements and the tests that name them -----------------------------------


def s_ids_in(text: str) -> set[int]:
    """Return the requirement numbers a text names (`S9`, and ranges such as `S20-S23`)."""
    ids = {int(match) for match in _S_ID.findall(text)}
    for start, end in _S_RANGE.findall(text):
        ids.update(range(int(start), int(end) + 1))
    return ids


def documented_requirements() -> set[int]:
    """Return the requirement numbers that docs/security.md has a heading for."""
    return {int(n) for n in _REQUIREMENT_HEADING.findall((DOCS / "security.md").read_text())}


def mentioned_requirements(*folders: str) -> dict[int, list[str]]:
    """Return each requirement number named in the Python files under `folders`, with where."""
    found: dict[int, list[str]] = defaultdict(list)
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                for s_id in s_ids_in(line):
                    found[s_id].append(f"{path.relative_to(ROOT)}:{number}")
    return dict(found)


def _test_spans(tree: ast.Module, lines: list[str]) -> list[tuple[int, int, str]]:
    """Return (first line, last line, name) of every test, comments just above it included."""
    spans = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                visit(node.body, f"{prefix}{node.name}::")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if not node.name.startswith("test"):
                    continue
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                while first > 1 and lines[first - 2].lstrip().startswith("#"):
                    first -= 1
                spans.append((first, node.end_lineno or node.lineno, prefix + node.name))

    visit(tree.body, "")
    return spans


def tests_by_requirement() -> dict[int, dict[str, list[str]]]:
    """Map each requirement number to {test file: [tests naming it]} from tests/.

    A mention inside a test (or in the comments just above it) counts for that test; one
    elsewhere in the file (its docstring, a helper) counts for the file as a whole, listed
    as "".
    """
    result: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        source = path.read_text()
        lines = source.splitlines()
        spans = _test_spans(ast.parse(source), lines)
        relative = str(path.relative_to(ROOT))
        for number, line in enumerate(lines, start=1):
            ids = s_ids_in(line)
            if not ids:
                continue
            owner = next((name for first, last, name in spans if first <= number <= last), "")
            for s_id in ids:
                if owner not in result[s_id][relative]:
                    result[s_id][relative].append(owner)
    return {s_id: dict(files) for s_id, files in result.items()}


def tests_markdown(s_id: int, planned: str | None, found: dict[int, dict[str, list[str]]]) -> str:
    """Return the "proved by" paragraph of one requirement."""
    files = found.get(s_id)
    if not files:
        if planned:
            return f"**Status:** planned (issue {planned}); no test names it yet."
        _log.warning("security.md: S%d is not planned, but no test in tests/ names it", s_id)
        return "**Status:** no test names this requirement yet."
    items = []
    for file, names in sorted(files.items()):
        tests = [f"`{name}`" for name in names if name]
        whole = "the file as a whole" if "" in names else ""
        described = ", ".join(tests + ([whole] if whole else []))
        items.append(f"- `{file}`: {described}")
    return "**Proved by:**\n\n" + "\n".join(items)


# --- the settings table --------------------------------------------------------------------

_SECTION = re.compile(r"^#\s*---\s*(.+?)\s*---")
_ASSIGNED = re.compile(r"^(?P<commented>#\s*)?(?P<key>[a-z][a-z0-9_]*)\s*=\s*(?P<rest>.*)$")
_EXPLAINED = re.compile(r"^#\s*(?P<key>[a-z][a-z0-9_]*):\s*(?P<rest>.*)$")


def _trailing_comment(rest: str) -> str:
    quoted = False
    for index, char in enumerate(rest):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return rest[index + 1 :].strip()
    return ""


def settings_comments(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Return each key's comment in settings.toml, and the section it is under.

    Understands `key = value  # comment` (continued by indented comment lines), the
    commented-out form `# key = value  # comment`, and `# key: explanation` (continued
    by comment lines up to the next key, section or blank line).
    """
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    section, current, explaining = "other", None, False
    for raw in path.read_text().splitlines():
        heading = _SECTION.match(raw)
        assigned = _ASSIGNED.match(raw)
        explained = _EXPLAINED.match(raw)
        if heading:
            section, current = heading.group(1), None
        elif current and raw[:1].isspace() and raw.lstrip().startswith("#"):
            comments[current] += " " + raw.lstrip()[1:].strip()
        elif assigned:
            current, explaining = assigned.group("key"), False
            comments[current] = _trailing_comment(assigned.group("rest"))
            sections[current] = section
        elif explained:
            current, explaining = explained.group("key"), True
            comments[current] = explained.group("rest").strip()
            sections[current] = section
        elif current and explaining and raw.startswith("#") and raw[1:].strip():
            comments[current] += " " + raw[1:].strip()
        else:
            current = None
    return comments, sections


def _constraints(field: Any) -> list[str]:
    words = []
    unit = "characters" if field.annotation is str else "item(s)"
    for item in field.metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                words.append(f"{symbol} {value}")
        min_length = getattr(item, "min_length", None)
        if min_length is not None:
            words.append(f"at least {min_length} {unit}")
    return words


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = str(annotation) if "[" in str(annotation) or "|" in str(annotation) else text
    text = text.replace("typing.", "").replace("pydantic.types.", "").replace("pathlib.", "")
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    return text


def _default(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{json.dumps(value) if isinstance(value, list | bool | str) else value}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _field_at(model: Any, path: tuple[str, ...]) -> Any:
    """Return the pydantic field a flat key's path ends at (a group's field, or a top one)."""
    field = model.model_fields[path[0]]
    return field if len(path) == 1 else field.annotation.model_fields[path[1]]


_RATE_UNITS = {60: "minute", 3600: "hour", 86400: "day"}


def _rate_text(rate: Any) -> str:
    """Write a rate as settings.toml does: "30/minute", "5/10s", or "off" for none."""
    if rate is None:
        return "off"
    period = int(rate.period)
    return f"{rate.count}/{_RATE_UNITS.get(period, f'{period}s')}"


def settings_rows() -> list[tuple[str, str, str, str, str]]:
    """Return (key, variable, type, default, limits) for every key settings.toml may set.

    The keys are the flat names (`db_pool_size`) that settings.toml and the `KEYSTILE_*`
    variables use, whatever group the field lives in (`database.pool_size`).
    """
    from keystile.settings import Settings
    from keystile.settings.loading import flat_names

    prefix = str(Settings.model_config.get("env_prefix", "KEYSTILE_"))
    rows = []
    for key, path in flat_names().items():
        if path[:2] == ("limits", "rates"):
            rates = _field_at(Settings, path[:2]).default
            default = _rate_text(getattr(rates[path[2]], path[3]))
            rows.append(
                (key, f"{prefix}{key.upper()}", '`"N/period"` \\| `"off"`', f'`"{default}"`', "")
            )
            continue
        field = _field_at(Settings, path)
        annotation = field.annotation
        kind = _type_name(annotation)
        if getattr(annotation, "__origin__", None) is not None and "Literal" in kind:
            kind = " \\| ".join(f"`{choice}`" for choice in annotation.__args__)
        else:
            kind = f"`{_escape(kind)}`"
        limits = ", ".join(_constraints(field))
        rows.append((key, f"{prefix}{key.upper()}", kind, _default(field), limits))
    return rows


def settings_markdown() -> str:
    """Return one table per settings.toml section: key, variable, type, default, meaning."""
    comments, sections = settings_comments(ROOT / "settings.toml")
    grouped: dict[str, list[str]] = {section: [] for section in sections.values()}
    for key, env, kind, default, limits in settings_rows():
        meaning = comments.get(key, "")
        said = not limits or f"({limits})" in meaning
        detail = _escape(meaning) + ("" if said else f" ({limits})")
        row = f"| `{key}` | `{env}` | {kind} | {default} | {detail} |"
        grouped.setdefault(sections.get(key, "other"), []).append(row)
    out = []
    for section, rows in grouped.items():
        if not rows:
            continue
        out += [f"### {section[0].upper()}{section[1:]}", ""]
        out += [
            "| setting | environment variable | type | default | meaning |",
            "|---|---|---|---|---|",
        ]
        out += [*rows, ""]
    return "\n".join(out)


# --- the API reference ---------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI document of an app that is created but never started."""
    from keystile.app import create_app
    from keystile.settings import load_settings

    settings = load_settings(secret_key="documentation-build-" + "x" * 32, extensions=[])
    app = create_app(settings)

    async def fetch() -> dict[str, Any]:
        response = await app.test_client().get("/openapi.json")
        if response.status_code != 200:
            raise RuntimeError(f"/openapi.json answered {response.status_code}")
        document: dict[str, Any] = await response.get_json()
        return document

    return asyncio.run(fetch())


def _schema_anchor(name: str) -> str:
    return "schema-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _schema_type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_schema_anchor(name)})"
    for combiner, glue in (("anyOf", " or "), ("oneOf", " or "), ("allOf", " and ")):
        if combiner in schema:
            return glue.join(_schema_type(part) for part in schema[combiner])
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "format" in schema:
        kind = f"{kind} ({schema['format']})"
    return str(kind)


_CONSTRAINT_WORDS = {
    "minLength": "at least {} characters",
    "maxLength": "at most {} characters",
    "minimum": ">= {}",
    "maximum": "<= {}",
    "exclusiveMinimum": "> {}",
    "exclusiveMaximum": "< {}",
    "minItems": "at least {} items",
    "maxItems": "at most {} items",
    "pattern": "matches `{}`",
    "default": "default `{}`",
}


def _schema_notes(schema: dict[str, Any]) -> str:
    notes = [schema["description"]] if schema.get("description") else []
    for part in schema.get("anyOf", []):
        if part.get("type") != "null" and "$ref" not in part:
            notes += [note for note in [_schema_notes(part)] if note]
    for key, words in _CONSTRAINT_WORDS.items():
        if key in schema:
            value = schema[key]
            notes.append(words.format(json.dumps(value) if key == "default" else value))
    examples = schema.get("examples") or ([schema["example"]] if "example" in schema else [])
    if examples:
        notes.append("e.g. " + ", ".join(f"`{json.dumps(example)}`" for example in examples[:2]))
    return _escape("; ".join(str(note) for note in notes))


def _fields_table(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    out = ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, spec in schema.get("properties", {}).items():
        yes = "yes" if field in required else "no"
        out.append(f"| `{field}` | {_schema_type(spec)} | {yes} | {_schema_notes(spec)} |")
    return [*out, ""]


def _inline(schema: dict[str, Any]) -> bool:
    return "$ref" not in schema and bool(schema.get("properties"))


def _body_type(schema: dict[str, Any]) -> str:
    if _inline(schema) and schema.get("title"):
        return f"`{schema['title']}`"
    return _schema_type(schema)


def link_requirements(text: str) -> str:
    """Link each `S<n>` in a text to its section of security.md."""
    return _S_ID.sub(lambda match: f"[{match.group(0)}](security.md#s{match.group(1)})", text)


def _resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` to a response, parameter or request body (not to a schema)."""
    seen = 0
    while "$ref" in item and item["$ref"].startswith("#/components/") and seen < 10:
        target: Any = document
        for part in item["$ref"][2:].split("/"):
            target = target.get(part, {})
        if "schemas" in item["$ref"].split("/"):
            return item
        item, seen = target, seen + 1
    return item


def _operation_markdown(
    document: dict[str, Any], path: str, method: str, operation: dict[str, Any]
) -> list[str]:
    out = [f"#### {method.upper()} `{path}`", ""]
    for key in ("summary", "description"):
        if operation.get(key):
            out += [link_requirements(operation[key]), ""]
    security = operation.get("security")
    if security is not None:
        schemes = [" + ".join(requirement) for requirement in security if requirement]
        who = " or ".join(f"`{scheme}`" for scheme in schemes) if schemes else "none"
        out += [f"Authentication: {who}.", ""]
    parameters = operation.get("parameters") or []
    if parameters:
        out += ["| parameter | in | type | required | notes |", "|---|---|---|---|---|"]
        for parameter in (_resolve(document, item) for item in parameters):
            schema = parameter.get("schema", {})
            notes = parameter.get("description") or _schema_notes(schema)
            required = "yes" if parameter.get("required") else "no"
            row = (
                f"| `{parameter['name']}` | {parameter['in']} | {_schema_type(schema)} "
                f"| {required} | {_escape(notes)} |"
            )
            out.append(row)
        out.append("")
    body = _resolve(document, operation.get("requestBody") or {})
    if body:
        for content_type, media in body.get("content", {}).items():
            schema = media.get("schema", {})
            out += [f"Request body (`{content_type}`): {_body_type(schema)}", ""]
            if schema.get("description"):
                out += [link_requirements(schema["description"]), ""]
            if _inline(schema):
                out += _fields_table(schema)
            example = media.get("example")
            if example is not None:
                out += ["```json", json.dumps(example, indent=2), "```", ""]
    responses = operation.get("responses") or {}
    if not responses:
        return [*out, "*The OpenAPI document lists no responses for this operation.*", ""]
    out += ["| status | meaning | body |", "|---|---|---|"]
    inline: list[tuple[str, dict[str, Any]]] = []
    for status, response in responses.items():
        response = _resolve(document, response)
        contents = response.get("content", {})
        bodies = []
        for kind, media in contents.items():
            schema = media.get("schema", {})
            bodies.append(f"{_body_type(schema)} (`{kind}`)")
            if _inline(schema):
                inline.append((status, schema))
        description = _escape(response.get("description", ""))
        out.append(f"| {status} | {description} | {', '.join(bodies) or '-'} |")
    out.append("")
    for status, schema in inline:
        out += [f"Response {status}: {_body_type(schema)}", "", *_fields_table(schema)]
    return out


def openapi_markdown(document: dict[str, Any] | None = None) -> str:
    """Return the operations and schemas of the OpenAPI document as Markdown."""
    document = document or openapi_document()
    info = document.get("info", {})
    out = [
        f"Generated from the OpenAPI {document.get('openapi', '')} document of "
        f"{info.get('title', 'keystile')} (version {info.get('version', '?')}).",
        "",
    ]
    schemes = document.get("components", {}).get("securitySchemes", {})
    if schemes:
        out += ["### Security schemes", "", "| name | kind | details |", "|---|---|---|"]
        for name, scheme in schemes.items():
            details = ", ".join(
                f"{key} `{value}`" for key, value in scheme.items() if key not in {"type"}
            )
            out.append(f"| `{name}` | {scheme.get('type', '')} | {_escape(details)} |")
        out.append("")
    groups: dict[str, list[str]] = defaultdict(list)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or method.startswith("x-"):
                continue
            tags = operation.get("tags") or [_group_of(path)]
            groups[tags[0]] += _operation_markdown(document, path, method, operation)
    for group, lines in groups.items():
        out += [f"### {group}", "", *lines]
    schemas = document.get("components", {}).get("schemas", {})
    if schemas:
        out += ["### Schemas", ""]
        for name, schema in schemas.items():
            out += [f"#### {name} {{#{_schema_anchor(name)}}}", ""]
            if schema.get("description"):
                out += [_escape(schema["description"]), ""]
            if not schema.get("properties"):
                out += [f"Type: {_schema_type(schema)}.", ""]
                continue
            out += _fields_table(schema)
    return "\n".join(out)


def _group_of(path: str) -> str:
    parts = [part for part in path.split("/") if part]
    if not parts:
        return "Pages"
    if parts[0] == "v1" and len(parts) > 1:
        return f"/v1/{parts[1]}"
    if parts[0] == ".well-known":
        return "Discovery"
    if parts[0] in {"healthz", "readyz", "metrics"}:
        return "Operations"
    return "Pages"


def errors_markdown() -> str:
    """Return every error code with its status: the domain errors, then HTTP-level ones."""
    from keystile import errors
    from keystile.web import errors as web_errors

    rows = {}
    pending = [errors.KeystileError]
    while pending:
        cls = pending.pop(0)
        pending += cls.__subclasses__()
        if cls is errors.KeystileError or not cls.__module__.startswith("keystile"):
            continue
        status = web_errors.status_for(cls.__new__(cls))
        rows.setdefault(cls.code, (status, cls.message, cls.__name__))
    for status, (code, message) in getattr(web_errors, "_HTTP_CODES", {}).items():
        rows.setdefault(code, (status, message, "(HTTP)"))
    out = ["| code | status | default message | raised as |", "|---|---|---|---|"]
    for code, (status, message, name) in sorted(rows.items(), key=lambda row: (row[1][0], row[0])):
        out.append(f"| `{code}` | {status} | {_escape(message)} | `{name}` |")
    return "\n".join(out)


# --- mkdocs hooks --------------------------------------------------------------------------


def _commands(parser: Any, path: tuple[str, ...], summary: str) -> Iterator[tuple[Any, str]]:
    import argparse

    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield parser, summary
    for group in groups:
        summaries = {choice.dest: choice.help or "" for choice in group._choices_actions}
        for name, sub in group.choices.items():
            yield from _commands(sub, (*path, name), summaries.get(name, ""))


def cli_markdown() -> str:
    """Every `keystile` command: its usage, what it does and its options, from the parser."""
    import argparse

    from keystile.cli import _parser

    rows = ["| command | what it does |", "|---|---|"]
    for parser, summary in _commands(_parser(), (), ""):
        usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
        usage = usage.replace(" [-h]", "")
        options = [
            f"`{', '.join(action.option_strings) or action.dest}`: {action.help}"
            for action in parser._actions
            if action.help
            and action.help != argparse.SUPPRESS
            and not isinstance(action, argparse._HelpAction)
        ]
        what = _escape(summary) + ("<br>" + "<br>".join(map(_escape, options)) if options else "")
        rows.append(f"| `{_escape(usage)}` | {what} |")
    return "\n".join(rows)


def _nav_pages(nav: Any) -> set[str]:
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, list):
        return set().union(*(_nav_pages(item) for item in nav)) if nav else set()
    if isinstance(nav, dict):
        return set().union(*(_nav_pages(item) for item in nav.values())) if nav else set()
    return set()


def on_config(config: Any) -> Any:
    """List pages that nav leaves out under "More", so a new page is never unreachable."""
    nav = config.get("nav")
    if not nav:
        return config
    listed = _nav_pages(nav)
    docs_dir = Path(config["docs_dir"])
    missing = sorted(
        str(path.relative_to(docs_dir))
        for path in docs_dir.rglob("*.md")
        if str(path.relative_to(docs_dir)) not in listed
    )
    if missing:
        _log.info("not in nav, listed under More: %s", ", ".join(missing))
        nav.append({"More": missing})
    return config


def _site_path(repo_path: str) -> str | None:
    """Return where a repository file appears in the site, if it does."""
    pages = {source: page for page, source in PUBLISHED.items()}
    if repo_path in pages:
        return pages[repo_path]
    if repo_path.startswith("docs/"):
        return repo_path.removeprefix("docs/")
    if repo_path.startswith("bench/results/") and repo_path.endswith(".png"):
        return "bench-results/" + repo_path.rsplit("/", 1)[-1]
    return None


def rewrite_links(text: str, source: str) -> str:
    """Point the relative links of a published file at site pages; unlink the rest.

    A link to a repository file that is not part of the site becomes its text followed
    by the path, so the strict build does not fail and the reader still knows where to look.
    """
    base = Path(source).parent

    def replace(match: re.Match[str]) -> str:
        target = match.group("target")
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(base / path).replace(os.sep, "/")
        page = _site_path(resolved)
        if page is not None:
            fragment = f"#{anchor}" if anchor else ""
            return f"{match.group('bang')}[{match.group('text')}]({page}{fragment})"
        label = match.group("text")
        return f"{label} (`{resolved}`)" if label.strip("`") != resolved else f"`{resolved}`"

    return _LINK.sub(replace, text)


def on_files(files: Any, config: Any) -> Any:
    """Publish CONTRIBUTING.md, CHANGELOG.md, SECURITY.md, bench and k8s notes, bench plots."""
    from mkdocs.structure.files import File

    for page, source in PUBLISHED.items():
        text = rewrite_links((ROOT / source).read_text(), source)
        # The harness names its targets after the document they came from; on the site
        # they are the Targets section of the performance page.
        text = text.replace("BENCHMARK.md", "[the targets](performance.md#targets)")
        files.append(File.generated(config, page, content=text))
    for plot in sorted((ROOT / "bench" / "results").glob("*.png")):
        files.append(File.generated(config, f"bench-results/{plot.name}", abs_src_path=str(plot)))
    return files


_cache: dict[str, str] = {}


def _generated(what: str) -> str:
    if what not in _cache:
        makers = {"openapi": openapi_markdown, "errors": errors_markdown}
        makers["settings"] = settings_markdown
        makers["cli"] = cli_markdown
        _cache[what] = makers[what]()
    return _cache[what]


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each `<!-- generated: ... -->` marker with text made from the code."""
    found: dict[int, dict[str, list[str]]] | None = None

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        what, args = match.group("what"), match.group("args").split()
        if what == "tests":
            found = found if found is not None else tests_by_requirement()
            s_id = int(args[0].lstrip("S"))
            planned = next(
                (arg.split("=", 1)[1] for arg in args if arg.startswith("planned=")), None
            )
            return tests_markdown(s_id, planned, found)
        if what in {"openapi", "errors", "settings", "cli"}:
            return _generated(what)
        _log.warning("%s: unknown generated part %r", page.file.src_uri, what)
        return match.group(0)

    markdown = _MARKER.sub(replace, markdown)
    if page.file.src_uri == "security.md":
        documented = documented_requirements()
        for s_id, places in sorted(mentioned_requirements("src", "tests").items()):
            if s_id not in documented:
                _log.warning("S%d (named at %s) has no section in security.md", s_id, places[0])
    return markdown


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else ""
    if what == "tests":
        for s_id, files in sorted(tests_by_requirement().items()):
            print(f"S{s_id}: " + "; ".join(f"{f} {names}" for f, names in files.items()))  # noqa: T201
        return 0
    if what in {"openapi", "errors", "settings", "cli"}:
        print(_generated(what))  # noqa: T201
        return 0
    print("usage: python scripts/docs_hooks.py openapi|errors|settings|cli|tests")  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
