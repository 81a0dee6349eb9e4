"""Words in reports: the one query syntax (terms, "phrases", prefix*, AND/OR, parentheses) parsed once and written
as SQLite FTS5 MATCH or PostgreSQL tsquery, and the full-text objects each database keeps beside `reports`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import TextClause, text

from retrieval.errors import ReportQueryError

MAX_QUERY_CHARS = 500
MAX_TERMS = 32
# Objects that live beside the `reports` table outside the models (autogenerate comparisons leave them out)
FTS_TABLE = "reports_fts"
PG_INDEX = "ix_reports_fts"
SQLITE_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(affirmed, content='reports', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON reports BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, affirmed) VALUES (new.id, new.affirmed); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON reports BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, affirmed) VALUES ('delete', old.id, old.affirmed); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF affirmed ON reports BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, affirmed) VALUES ('delete', old.id, old.affirmed); "
    f"INSERT INTO {FTS_TABLE}(rowid, affirmed) VALUES (new.id, new.affirmed); END",
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')",  # rows stored before the table existed
)
POSTGRES_DDL = (f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON reports USING gin (to_tsvector('simple', affirmed))",)
_TOKEN = re.compile(r'\s*(?:(?P<quote>")|(?P<open>\()|(?P<close>\))|(?P<word>[^\s"()]+))')
_WORD = re.compile(r"[^\W_]+")


def is_full_text_object(name: str | None) -> bool:
    """Whether a table or index is one of the full-text objects (not in the models: created by migration 0008)."""
    return bool(name) and (str(name).startswith(FTS_TABLE) or name == PG_INDEX)


@dataclass(frozen=True)
class Term:
    """Words that must follow each other (one word, or a quoted phrase); `prefix`: the last word is a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True)
class Both:
    """Every part must match (AND, or words side by side)."""

    parts: tuple[Node, ...]


@dataclass(frozen=True)
class Either:
    """Any part may match (OR)."""

    parts: tuple[Node, ...]


Node = Term | Both | Either


def parse(query: str) -> Node:
    """The syntax tree of a report query; a ReportQueryError names the problem and where it is."""
    if len(query) > MAX_QUERY_CHARS:
        raise ReportQueryError(f"the report query is {len(query)} characters long; at most {MAX_QUERY_CHARS}")
    parser = _Parser(query)
    node = parser.alternatives()
    if parser.pos < len(parser.tokens):
        kind, _, at = parser.tokens[parser.pos]
        raise ReportQueryError(f"unexpected {kind!r} at character {at + 1}: a ')' without its '('")
    if parser.terms > MAX_TERMS:
        raise ReportQueryError(f"the report query has {parser.terms} terms; at most {MAX_TERMS}")
    return node


class _Parser:
    """Recursive descent over: alternatives = sequence (OR sequence)*; sequence = item (AND? item)*."""

    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _tokens(query)
        self.pos = 0
        self.terms = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def alternatives(self) -> Node:
        parts = [self.sequence()]
        while (token := self._peek()) and token[0] == "OR":
            self.pos += 1
            parts.append(self.sequence(after=f"OR at character {token[2] + 1}"))
        return parts[0] if len(parts) == 1 else Either(tuple(parts))

    def sequence(self, after: str = "") -> Node:
        parts: list[Node] = []
        while (token := self._peek()) and token[0] not in ("OR", ")"):
            if token[0] == "AND":
                if not parts:
                    raise ReportQueryError(f"AND at character {token[2] + 1} has nothing before it")
                self.pos += 1
                if not (nxt := self._peek()) or nxt[0] in ("OR", ")", "AND"):
                    raise ReportQueryError(f"AND at character {token[2] + 1} has nothing after it")
                continue
            parts.append(self.item())
        if not parts:
            where = f" after {after}" if after else ""
            raise ReportQueryError(f"the report query has no words{where}: {self.query!r}")
        return parts[0] if len(parts) == 1 else Both(tuple(parts))

    def item(self) -> Node:
        kind, value, at = self.tokens[self.pos]
        self.pos += 1
        if kind == "(":
            inner = self.alternatives()
            closing = self._peek()
            if not closing or closing[0] != ")":
                raise ReportQueryError(f"the '(' at character {at + 1} is never closed")
            self.pos += 1
            return inner
        words = tuple(w.lower() for w in _WORD.findall(value))
        prefix = value.endswith("*")
        if not words:
            what = "phrase" if kind == "phrase" else "term"
            raise ReportQueryError(f"the {what} {value!r} at character {at + 1} holds no letters or digits")
        self.terms += 1
        return Term(words, prefix)


def _tokens(query: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) tokens: "(", ")", "AND", "OR", "phrase" (quoted, maybe followed by *), "word"."""
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if not match or match.end() == pos:
            break  # trailing spaces
        start = match.start(match.lastgroup or 0)
        if match.group("quote"):
            end = query.find('"', start + 1)
            if end < 0:
                raise ReportQueryError(f'the quote at character {start + 1} is never closed: add a closing "')
            tail = end + 1
            star = query[tail : tail + 1] == "*"
            out.append(("phrase", query[start + 1 : end] + ("*" if star else ""), start))
            pos = tail + (1 if star else 0)
            continue
        if match.group("open") or match.group("close"):
            out.append((match.group("open") or ")", "", start))
        else:
            word = match.group("word")
            out.append((word if word in ("AND", "OR") else "word", word, start))
        pos = match.end()
    return out


def to_fts5(node: Node) -> str:
    """The SQLite FTS5 MATCH expression (every term quoted: nothing the user typed is read as FTS5 syntax)."""
    if isinstance(node, Term):
        return '"' + " ".join(node.words) + '"' + (" *" if node.prefix else "")
    joiner = " AND " if isinstance(node, Both) else " OR "
    return "(" + joiner.join(to_fts5(part) for part in node.parts) + ")"


def to_tsquery(node: Node) -> str:
    """The PostgreSQL to_tsquery('simple', ...) expression: phrases as <->, prefixes as :*."""
    if isinstance(node, Term):
        lexemes = [f"'{word}'" for word in node.words]
        if node.prefix:
            lexemes[-1] += ":*"
        return "(" + " <-> ".join(lexemes) + ")"
    joiner = " & " if isinstance(node, Both) else " | "
    return "(" + joiner.join(to_tsquery(part) for part in node.parts) + ")"


def _matching_sql(dialect: str, node: Node) -> tuple[str, str]:
    """The SELECT of the study UIDs whose latest report matches (one `?` parameter), and that parameter."""
    if dialect == "postgresql":
        sql = (
            "SELECT study_instance_uid FROM reports WHERE latest "
            "AND to_tsvector('simple', affirmed) @@ to_tsquery('simple', ?)"
        )
        return sql, to_tsquery(node)
    sql = (
        f"SELECT r.study_instance_uid FROM {FTS_TABLE} JOIN reports r ON r.id = {FTS_TABLE}.rowid "
        f"WHERE {FTS_TABLE} MATCH ? AND r.latest"
    )
    return sql, to_fts5(node)


def matching_studies(dialect: str, query: str) -> TextClause:
    """A statement selecting the study UIDs whose latest report matches `query` (a ReportQueryError when the query
    cannot be read)."""
    sql, expression = _matching_sql(dialect, parse(query))
    return text(sql.replace("?", ":report_query")).bindparams(report_query=expression)


def report_condition(dialect: str, query: str) -> tuple[str, list[Any]]:
    """The report filter as an SQL prefilter on `images i` (with its `?` parameter), composed with the other
    filters by the query path's plain SQL."""
    sql, expression = _matching_sql(dialect, parse(query))
    return f"i.study_instance_uid IN ({sql})", [expression]


def any_words(text_query: str) -> Node:
    """A free text as a ranking query: any of its words (bm25 / ts_rank weigh the rarer ones higher)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text_query)))[:MAX_TERMS]
    if not words:
        raise ReportQueryError(f"the text {text_query!r} has no words to match reports with")
    terms = tuple(Term((w,)) for w in words)
    return terms[0] if len(terms) == 1 else Either(terms)


def any_words_query(text_query: str) -> str:
    """`any_words` written in the report query syntax (for the `report` filter): "word" OR "word" ..."""
    node = any_words(text_query)
    terms = node.parts if isinstance(node, Either) else (node,)
    return " OR ".join('"' + " ".join(term.words) + '"' for term in terms if isinstance(term, Term))


def ranked_studies(dialect: str, node: Node, limit: int) -> TextClause:
    """Study UIDs whose latest report matches, most relevant first (FTS5 bm25; PostgreSQL ts_rank_cd)."""
    if dialect == "postgresql":
        sql = (
            "SELECT study_instance_uid FROM reports WHERE latest "
            "AND to_tsvector('simple', affirmed) @@ to_tsquery('simple', :report_query) "
            "ORDER BY ts_rank_cd(to_tsvector('simple', affirmed), to_tsquery('simple', :report_query)) DESC, id "
            "LIMIT :limit"
        )
        expression = to_tsquery(node)
    else:
        sql = (
            f"SELECT r.study_instance_uid FROM {FTS_TABLE} JOIN reports r ON r.id = {FTS_TABLE}.rowid "
            f"WHERE {FTS_TABLE} MATCH :report_query AND r.latest ORDER BY {FTS_TABLE}.rank, r.id LIMIT :limit"
        )
        expression = to_fts5(node)
    return text(sql).bindparams(report_query=expression, limit=limit)
