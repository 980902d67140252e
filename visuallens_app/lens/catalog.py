"""Catalogs: the things that can be recommended (a folder with items.jsonl or items.csv).

A catalog is hand-made or exported from a spreadsheet, so loading is forgiving: field names are
case-insensitive and common aliases are accepted, a bad line is skipped and reported as a
:class:`CatalogProblem` while the good lines load, and only a catalog that cannot be used at all
(no folder, no items file, no valid item) raises :class:`~visuallens_app.errors.CatalogError`.
The format is documented in ``resources/catalog/README.md``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from visuallens_app._gc import collector_paused
from visuallens_app.errors import CatalogError
from visuallens_app.lens.untrusted import (
    BadLine,
    check_path_text,
    check_text,
    expand_home,
    holds_surrogate,
    parse_json_line,
    shown,
)
from visuallens_app.settings import resources_dir

log = logging.getLogger(__name__)

#: Items files looked for in a catalog folder, in order of preference.
ITEMS_FILES = ("items.jsonl", "items.csv")

#: Accepted column/key names (case-insensitive) -> the CatalogItem field they fill.
FIELD_ALIASES: dict[str, str] = {
    "id": "id",
    "slug": "id",
    "name": "name",
    "title": "name",
    "category": "category",
    "type": "category",
    "kind": "category",
    "description": "description",
    "desc": "description",
    "summary": "description",
    "images": "images",
    "image": "images",
    "photos": "images",
    "photo": "images",
    "tags": "tags",
    "tag": "tags",
    "labels": "tags",
    "keywords": "tags",
    "rating": "rating",
    "stars": "rating",
    "score": "rating",
    "url": "url",
    "link": "url",
    "website": "url",
}

# Spreadsheet cells hold lists as one string; images never split on "," (file names may hold one).
_TAG_SEPARATORS = re.compile(r"[;|,]")
_IMAGE_SEPARATORS = re.compile(r"[;|]")
_PROBLEMS_IN_ERROR = 3


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One candidate: a name plus a description and optional images (absolute paths)."""

    id: str
    name: str
    category: str
    description: str
    images: tuple[Path, ...] = ()
    tags: tuple[str, ...] = ()
    rating: float | None = None
    url: str | None = None

    def text(self) -> str:
        """What a text encoder should read for this item: its kind and its description.

        Descriptions in the shipped catalog do not repeat the name, so it is put in front.
        """
        if self.description.casefold().startswith(self.name.casefold()):
            return self.description
        return f"{self.name}: {self.description}"


@dataclass(frozen=True, slots=True)
class Catalog:
    """A loaded catalog: its folder, a display name, and the items that validated."""

    name: str
    root: Path
    items: tuple[CatalogItem, ...] = field(default_factory=tuple)

    def categories(self) -> list[str]:
        return sorted({item.category for item in self.items})

    def in_category(self, category: str) -> list[CatalogItem]:
        wanted = category.strip().casefold()
        return [item for item in self.items if item.category.casefold() == wanted]


@dataclass(frozen=True, slots=True)
class CatalogProblem:
    """Why one line of an items file was skipped or only partly used, in words a user can act on.

    ``line`` is the 1-based line in the items file (0: the file as a whole); ``field`` is the
    CatalogItem field concerned, or empty when the whole line is unreadable.
    """

    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        if self.field:
            return f"{where}, field '{self.field}': {self.reason}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CatalogLoad:
    """A catalog together with the problems found while loading it (empty when all was well)."""

    catalog: Catalog
    problems: tuple[CatalogProblem, ...] = ()


class _SkipLine(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """One field made a line unusable; carries the problem to report."""

    def __init__(self, problem: CatalogProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(slots=True)
class _Draft:
    """A validated line before ids are settled (ids need the whole file to be unique)."""

    line: int
    id: str | None
    name: str
    category: str
    description: str
    images: tuple[Path, ...]
    tags: tuple[str, ...]
    rating: float | None
    url: str | None
    problems: tuple[CatalogProblem, ...] = ()


def slugify(text: str) -> str:
    """A lowercase, hyphenated, accent-free form of ``text`` for ids: "Café Noir" -> "cafe-noir".

    Letters of any script are kept, so a name in Japanese still gets a readable id.
    """
    if text.isascii():
        # Nothing to decompose (most names): every run of non-alphanumerics becomes one "-",
        # as the pattern below does, without a regex (a 100,000-item catalog loads faster).
        runs = text.lower().encode("ascii").translate(_ASCII_NON_ALNUM).split(b"-")
        return b"-".join(filter(None, runs)).decode("ascii")
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "-", stripped.casefold()).strip("-")


#: bytes.translate table: ASCII letters and digits kept, every other byte "-".
_ASCII_NON_ALNUM = bytes(c if chr(c).isascii() and chr(c).isalnum() else 45 for c in range(256))


def item_id(category: str, name: str) -> str:
    """The id an item gets when its line has none: ``category-slug/name-slug``."""
    return f"{slugify(category) or 'item'}/{slugify(name) or 'item'}"


def default_catalog_dir() -> Path:
    """The folder of the catalog shipped with the app (used when settings name no other)."""
    return resources_dir() / "catalog"


def load_default_catalog() -> Catalog:
    """The shipped catalog; its problems (there should be none) are logged, not raised."""
    loaded = load_catalog(default_catalog_dir(), name="Default catalog")
    for problem in loaded.problems:
        log.warning("default catalog: %s", problem)
    return loaded.catalog


def load_catalog(folder: Path, name: str | None = None) -> CatalogLoad:
    """Load the catalog in ``folder`` (items.jsonl, else items.csv), keeping every valid line.

    Parameters
    ----------
    folder:
        The catalog folder; image paths in the file are relative to it and must stay inside it.
    name:
        Display name; defaults to the folder's name.

    Raises
    ------
    CatalogError
        When the folder or its items file is missing or unreadable, or no line gives a valid item.
    """
    if "\x00" in os.fspath(folder):  # from a settings file: argv cannot hold one
        raise CatalogError(f"The catalog folder {shown(os.fspath(folder), 200)} is not a path.")
    try:
        folder = expand_home(Path(folder))
    except BadLine as err:
        raise CatalogError(f"The catalog folder {folder} {err}.") from err
    if not folder.exists():
        raise CatalogError(f"The catalog folder {folder} does not exist.")
    if not folder.is_dir():
        raise CatalogError(f"The catalog path {folder} is not a folder.")
    path = next((folder / n for n in ITEMS_FILES if (folder / n).is_file()), None)
    if path is None:
        raise CatalogError(f"The catalog folder {folder} has no items.jsonl or items.csv file.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"The catalog file {path} cannot be read ({exc.strerror}).") from exc

    problems: list[CatalogProblem] = []
    text = _decode(raw, problems)
    records = _jsonl_records(text) if path.suffix == ".jsonl" else _csv_records(text)
    root = folder.resolve()
    drafts: list[_Draft] = []
    with collector_paused():
        for line, record, suspect in records:
            if isinstance(record, CatalogProblem):
                problems.append(record)
                continue
            try:
                drafts.append(_draft(line, record, root, check=suspect))
            except _SkipLine as skip:
                problems.append(skip.problem)
        items = _settle_ids(drafts, problems)
    problems.sort(key=lambda p: p.line)
    if not items:
        raise CatalogError(_no_items_message(path, problems))
    catalog = Catalog(name=name or folder.name, root=root, items=tuple(items))
    return CatalogLoad(catalog=catalog, problems=tuple(problems))


def _decode(raw: bytes, problems: list[CatalogProblem]) -> str:
    """UTF-8 (with or without Excel's BOM); a Windows-1252 export is read too, with a note."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.append(
            CatalogProblem(0, "", "not UTF-8; read as Windows-1252, check accented letters")
        )
        return raw.decode("cp1252", errors="replace")


#: JSON's own scanner (C), which ``json.loads`` wraps in a few Python calls per line.
_scan_json: Callable[[str, int], tuple[object, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _jsonl_records(text: str) -> Iterator[tuple[int, Mapping[str, object] | CatalogProblem, bool]]:
    """(line, record or problem, whether the line may spell a lone surrogate) per line."""
    # Not splitlines(): it also splits on U+2028 and friends, which JSON strings may contain.
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        value: object
        try:
            value, end = _scan_json(stripped, 0)
            if end != len(stripped):
                raise ValueError("extra data")
        except Exception:  # re-parsed below, for json.loads's own reason
            try:
                value = parse_json_line(stripped)
            except BadLine as bad:
                yield number, CatalogProblem(number, "", str(bad)), False
                continue
        if not isinstance(value, dict):
            yield number, CatalogProblem(number, "", "not a JSON object ({...})"), False
            continue
        # Decoded UTF-8 holds no surrogate: only a \u escape can spell one.
        yield number, value, "\\u" in stripped


def _csv_records(text: str) -> Iterator[tuple[int, Mapping[str, object] | CatalogProblem, bool]]:
    """(line, record or problem, whether a value may hold a lone surrogate) per row."""
    suspect = holds_surrogate(text)  # never, from a UTF-8 or cp1252 decode
    lines = text.split("\n")
    header_line = next((ln for ln in lines if ln.strip()), "")
    # Spreadsheets in many locales export with ";" (or tabs); the header line tells which.
    delimiter = max(",;\t", key=header_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            cells = [cell.strip() for cell in row]
            if any(cells) and not cells[0].startswith("#"):
                if header is None:
                    header = cells
                else:
                    yield start, dict(zip(header, cells, strict=False)), suspect
            start = reader.line_num + 1  # a quoted cell may span lines: the next row starts here
    except csv.Error as exc:
        yield start, CatalogProblem(start, "", f"unreadable CSV from here on ({exc})"), False


def _fields(record: Mapping[str, object]) -> dict[str, object]:
    """Map the record's keys onto CatalogItem fields; a canonical key wins over its aliases."""
    out: dict[str, object] = {}
    for key, value in record.items():
        # Most files spell the keys as listed: one lookup, no casefolding.
        name = key if key in FIELD_ALIASES else str(key).strip().casefold()
        target = FIELD_ALIASES.get(name)
        if target is None or _is_empty(value):
            continue
        if target not in out or name == target:
            out[target] = value
    return out


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _text(line: int, name: str, value: object, check: bool = True) -> str | None:
    """The value as one line of text (whitespace collapsed); None when absent.

    ``check`` False: the line cannot hold a lone surrogate, so none is looked for.
    """
    if value is None:
        return None
    if type(value) is not str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _SkipLine(CatalogProblem(line, name, "must be text"))
        value = str(value)
    if check:
        try:
            check_text(value)
        except BadLine as bad:  # what matching would fail to hash, refused here for everyone
            raise _SkipLine(CatalogProblem(line, name, str(bad))) from None
    return " ".join(value.split()) or None


def _required(line: int, name: str, value: object, check: bool = True) -> str:
    text = _text(line, name, value, check)
    if text is None:
        raise _SkipLine(CatalogProblem(line, name, "missing"))
    return text


def _list(value: object, separators: re.Pattern[str]) -> list[str]:
    if value is None:
        return []
    parts = separators.split(value) if isinstance(value, str) else value
    if not isinstance(parts, list | tuple):
        parts = [parts]
    if all(type(part) is str for part in parts):  # the common case, in one pass of C loops
        unique = dict.fromkeys([" ".join(str(part).split()) for part in parts])
        unique.pop("", None)
        return list(unique)
    seen: dict[str, None] = {}
    for part in parts:
        if isinstance(part, str | int | float) and not isinstance(part, bool):
            cleaned = " ".join(str(part).split())
            if cleaned:
                seen.setdefault(cleaned)
    return list(seen)


def _rating(line: int, value: object) -> float | None:
    if value is None:
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer of hundreds of digits
            too_large = f"a {len(str(abs(int(value))))}-digit number, far too large"
            raise _SkipLine(CatalogProblem(line, "rating", too_large)) from None
    elif isinstance(value, str):
        cleaned = value.strip()
        if cleaned.count(",") == 1 and "." not in cleaned:
            cleaned = cleaned.replace(",", ".")  # "4,5" from a European spreadsheet
        try:
            number = float(cleaned)
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        given = f"'{shown(value)}'" if isinstance(value, str) else shown(value)
        raise _SkipLine(CatalogProblem(line, "rating", f"{given} is not a number"))
    return number


def _images(line: int, value: object, root: Path, problems: list[CatalogProblem]) -> list[Path]:
    """Resolve image paths inside ``root``; refuse escapes and missing files, keep the rest."""
    images: list[Path] = []
    for raw in _list(value, _IMAGE_SEPARATORS):
        try:
            given = Path(check_path_text(raw).replace("\\", "/"))
        except BadLine as bad:  # no file has this name: the line is garbled, not the folder
            raise _SkipLine(CatalogProblem(line, "images", str(bad))) from None
        try:
            resolved = (given if given.is_absolute() else root / given).resolve()
        except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
            followed = f"'{shown(raw)}' cannot be followed (a symlink loop?), ignored"
            problems.append(CatalogProblem(line, "images", followed))
            continue
        quoted = f"'{shown(raw)}'"
        if not resolved.is_relative_to(root):
            problems.append(
                CatalogProblem(line, "images", f"{quoted} is outside the catalog folder, ignored")
            )
        elif not resolved.is_file():
            problems.append(CatalogProblem(line, "images", f"{quoted} does not exist, ignored"))
        elif resolved not in images:
            images.append(resolved)
    return images


#: Longer fields are cut at load, with a warning: nothing downstream reads more.
MAX_DESCRIPTION_CHARS = 10_000
MAX_NAME_CHARS = 300


def _draft(line: int, record: Mapping[str, object], root: Path, *, check: bool = True) -> _Draft:
    """Validate one record; ``check`` False when no value can hold a lone surrogate."""
    values = _fields(record)
    name = _required(line, "name", values.get("name"), check)
    category = _required(line, "category", values.get("category"), check)
    tags = _list(values.get("tags"), _TAG_SEPARATORS)
    for tag in tags if check else ():
        try:
            check_text(tag)
        except BadLine as bad:
            raise _SkipLine(CatalogProblem(line, "tags", str(bad))) from None
    rating = _rating(line, values.get("rating"))
    description = _text(line, "description", values.get("description"), check)
    cut: list[CatalogProblem] = []
    if description and len(description) > MAX_DESCRIPTION_CHARS:
        # A 48 MB description made recommend peak at 7.8 GB: the encoders read ~256 tokens.
        description = description[:MAX_DESCRIPTION_CHARS].rsplit(" ", 1)[0]
        cut.append(
            CatalogProblem(line, "description", f"cut to {MAX_DESCRIPTION_CHARS:,} characters")
        )
    if len(name) > MAX_NAME_CHARS:
        name = name[:MAX_NAME_CHARS].rstrip()
        cut.append(CatalogProblem(line, "name", f"cut to {MAX_NAME_CHARS} characters"))
    if not description:
        # A text encoder needs something to match; the tags say more than the name alone.
        description = f"{name}: {', '.join(tags)}" if tags else name
    url = _text(line, "url", values.get("url"), check)
    explicit_id = _text(line, "id", values.get("id"), check)
    image_problems: list[CatalogProblem] = []
    images = _images(line, values.get("images"), root, image_problems) if "images" in values else []
    return _Draft(
        line=line,
        id=explicit_id or None,
        name=name,
        category=category,
        description=description,
        images=tuple(images),
        tags=tuple(tags),
        rating=rating,
        url=url or None,
        problems=(*cut, *image_problems),  # reported only if the line is kept (ids come later)
    )


def _settle_ids(drafts: list[_Draft], problems: list[CatalogProblem]) -> list[CatalogItem]:
    """Explicit ids must be unique (a repeat is skipped); derived ids get -2, -3... to be unique."""
    taken: dict[str, int] = {}
    kept: list[_Draft] = []
    for draft in drafts:
        if draft.id is None:
            kept.append(draft)
        elif draft.id in taken:
            problems.append(
                CatalogProblem(draft.line, "id", f"'{draft.id}' repeats line {taken[draft.id]}")
            )
        else:
            taken[draft.id] = draft.line
            kept.append(draft)
    items: list[CatalogItem] = []
    category_slugs: dict[str, str] = {}  # a catalog has few categories and many items
    for draft in kept:
        problems.extend(draft.problems)
        ident = draft.id
        if ident is None:
            slug = category_slugs.get(draft.category)
            if slug is None:
                slug = category_slugs[draft.category] = slugify(draft.category) or "item"
            base = f"{slug}/{slugify(draft.name) or 'item'}"
            ident, suffix = base, 2
            while ident in taken:
                ident, suffix = f"{base}-{suffix}", suffix + 1
            taken[ident] = draft.line
        items.append(
            CatalogItem(
                id=ident,
                name=draft.name,
                category=draft.category,
                description=draft.description,
                images=draft.images,
                tags=draft.tags,
                rating=draft.rating,
                url=draft.url,
            )
        )
    return items


def _no_items_message(path: Path, problems: list[CatalogProblem]) -> str:
    if not problems:
        return f"The catalog file {path} has no items."
    shown = "; ".join(str(p) for p in problems[:_PROBLEMS_IN_ERROR])
    more = len(problems) - _PROBLEMS_IN_ERROR
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else ""
    return f"The catalog file {path} has no valid items ({shown}{tail})."
