'use strict';
/*
 * Drive v3 search query (`q`) parser and evaluator, following
 * developers.google.com/drive/api/guides/ref-search-terms.
 *
 *   query   := or
 *   or      := and ('or' and)*
 *   and     := not ('and' not)*
 *   not     := 'not' not | '(' query ')' | term
 *   term    := STRING 'in' ('parents' | 'owners' | 'writers' | 'readers')
 *            | ('appProperties' | 'properties') 'has' '{' 'key' '=' STRING 'and' 'value' '=' STRING '}'
 *            | FIELD OP VALUE
 *   STRING  := '...' with \' and \\ as the only escapes
 *
 * Fields and the operators Drive allows on them:
 *   name      = != contains   (contains = case-insensitive prefix of the name or of
 *                              one of its words, as Drive does: 'Hello' matches
 *                              "HelloWorld" and "say hello", 'World' does not)
 *   mimeType  = != contains   (contains = substring)
 *   fullText  contains        (approximated: case-insensitive substring of name/description)
 *   modifiedTime, createdTime, viewedByMeTime   = != < <= > >=  (RFC 3339, UTC by default)
 *   trashed, starred          = !=  true/false
 * Keywords (and, or, not, in, has, contains, true, false) are case-insensitive.
 * Anything else throws QueryError; google.js maps it to Drive's 400 "Invalid Value" on q.
 *
 * parseQuery(q) -> AST; compileQuery(q) -> (file) => boolean, where `file` is the
 * fake's internal record ({name, mimeType, parents[], trashed, starred,
 * modifiedTime, createdTime (ISO strings), appProperties, properties, ownerEmail,
 * description}).
 */

class QueryError extends Error {}

const KEYWORDS = new Set(['and', 'or', 'not', 'in', 'has', 'contains', 'true', 'false']);

function tokenize(q) {
  const toks = [];
  let i = 0;
  while (i < q.length) {
    const c = q[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === "'") {
      let s = '';
      i++;
      for (;;) {
        if (i >= q.length) throw new QueryError('unterminated string');
        const d = q[i];
        if (d === '\\') {
          const e = q[i + 1];
          if (e !== "'" && e !== '\\') throw new QueryError(`invalid escape \\${e === undefined ? '' : e}`);
          s += e; i += 2; continue;
        }
        if (d === "'") { i++; break; }
        s += d; i++;
      }
      toks.push({ t: 'str', v: s });
      continue;
    }
    const two = q.slice(i, i + 2);
    if (two === '!=' || two === '<=' || two === '>=') { toks.push({ t: 'op', v: two }); i += 2; continue; }
    if ('=<>'.includes(c)) { toks.push({ t: 'op', v: c }); i++; continue; }
    if ('(){}'.includes(c)) { toks.push({ t: c }); i++; continue; }
    const m = /^[A-Za-z_][A-Za-z0-9_.]*/.exec(q.slice(i));
    if (m) {
      const w = m[0];
      const lw = w.toLowerCase();
      toks.push(KEYWORDS.has(lw) ? { t: 'kw', v: lw } : { t: 'id', v: w });
      i += w.length;
      continue;
    }
    const n = /^-?[0-9]+(\.[0-9]+)?/.exec(q.slice(i));
    if (n) { toks.push({ t: 'num', v: Number(n[0]) }); i += n[0].length; continue; }
    throw new QueryError(`unexpected character '${c}' at ${i}`);
  }
  return toks;
}

const FIELD_OPS = {
  name: ['=', '!=', 'contains'],
  mimeType: ['=', '!=', 'contains'],
  fullText: ['contains'],
  modifiedTime: ['=', '!=', '<', '<=', '>', '>='],
  createdTime: ['=', '!=', '<', '<=', '>', '>='],
  viewedByMeTime: ['=', '!=', '<', '<=', '>', '>='],
  trashed: ['=', '!='],
  starred: ['=', '!='],
};
const TIME_FIELDS = new Set(['modifiedTime', 'createdTime', 'viewedByMeTime']);
const BOOL_FIELDS = new Set(['trashed', 'starred']);
const IN_FIELDS = new Set(['parents', 'owners', 'writers', 'readers']);

function parseTime(s) {
  // RFC 3339; Drive assumes UTC when the offset is missing.
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:\d{2})?$/.test(s)) {
    throw new QueryError(`invalid time '${s}'`);
  }
  const hasZone = /(Z|[+-]\d{2}:\d{2})$/.test(s) && s.includes('T');
  const ms = Date.parse(hasZone ? s : (s.includes('T') ? `${s}Z` : `${s}T00:00:00Z`));
  if (Number.isNaN(ms)) throw new QueryError(`invalid time '${s}'`);
  return ms;
}

function parseQuery(q) {
  const toks = tokenize(q);
  let p = 0;
  const peek = () => toks[p];
  const next = () => toks[p++];
  const isKw = (tok, v) => tok && tok.t === 'kw' && tok.v === v;
  function expect(pred, what) {
    const tok = next();
    if (!tok || !pred(tok)) throw new QueryError(`expected ${what}${tok ? ` near '${tok.v || tok.t}'` : ' at end of query'}`);
    return tok;
  }

  function parseOr() {
    let left = parseAnd();
    while (isKw(peek(), 'or')) { next(); left = { op: 'or', a: left, b: parseAnd() }; }
    return left;
  }
  function parseAnd() {
    let left = parseNot();
    while (isKw(peek(), 'and')) { next(); left = { op: 'and', a: left, b: parseNot() }; }
    return left;
  }
  function parseNot() {
    const tok = peek();
    if (isKw(tok, 'not')) { next(); return { op: 'not', a: parseNot() }; }
    if (tok && tok.t === '(') {
      next();
      const e = parseOr();
      expect((t) => t.t === ')', "')'");
      return e;
    }
    return parseTerm();
  }
  function parseTerm() {
    const tok = next();
    if (!tok) throw new QueryError('expected a term at end of query');
    if (tok.t === 'str') {
      expect((t) => isKw(t, 'in'), "'in'");
      const f = expect((t) => t.t === 'id' && IN_FIELDS.has(t.v), 'parents, owners, writers or readers');
      return { op: 'in', value: tok.v, field: f.v };
    }
    if (tok.t !== 'id') throw new QueryError(`expected a field name near '${tok.v || tok.t}'`);
    const field = tok.v;
    if (field === 'appProperties' || field === 'properties') {
      expect((t) => isKw(t, 'has'), "'has'");
      expect((t) => t.t === '{', "'{'");
      expect((t) => t.t === 'id' && t.v === 'key', "'key'");
      expect((t) => t.t === 'op' && t.v === '=', "'='");
      const key = expect((t) => t.t === 'str', 'a quoted key').v;
      expect((t) => isKw(t, 'and'), "'and'");
      expect((t) => t.t === 'id' && t.v === 'value', "'value'");
      expect((t) => t.t === 'op' && t.v === '=', "'='");
      const value = expect((t) => t.t === 'str', 'a quoted value').v;
      expect((t) => t.t === '}', "'}'");
      return { op: 'has', field, key, value };
    }
    const ops = FIELD_OPS[field];
    if (!ops) throw new QueryError(`unknown or unsupported field '${field}'`);
    const opTok = next();
    const op = opTok && (opTok.t === 'op' || isKw(opTok, 'contains')) ? opTok.v : null;
    if (!op || !ops.includes(op)) throw new QueryError(`operator ${op || '(missing)'} is not allowed on ${field}`);
    const vt = next();
    if (!vt) throw new QueryError(`missing value for ${field}`);
    if (BOOL_FIELDS.has(field)) {
      if (!(isKw(vt, 'true') || isKw(vt, 'false'))) throw new QueryError(`${field} needs true or false`);
      return { op, field, value: vt.v === 'true' };
    }
    if (vt.t !== 'str') throw new QueryError(`${field} needs a quoted string`);
    if (TIME_FIELDS.has(field)) return { op, field, value: parseTime(vt.v) };
    return { op, field, value: vt.v };
  }

  if (toks.length === 0) throw new QueryError('empty query');
  const ast = parseOr();
  if (p !== toks.length) throw new QueryError(`unexpected '${toks[p].v || toks[p].t}' after end of expression`);
  return ast;
}

function nameContains(name, needle) {
  const n = needle.toLowerCase();
  const h = String(name).toLowerCase();
  if (h.startsWith(n)) return true;
  return h.split(/[^\p{L}\p{N}]+/u).some((w) => w.startsWith(n));
}

function cmp(op, a, b) {
  switch (op) {
    case '=': return a === b;
    case '!=': return a !== b;
    case '<': return a < b;
    case '<=': return a <= b;
    case '>': return a > b;
    case '>=': return a >= b;
    default: return false;
  }
}

function evaluate(ast, f) {
  switch (ast.op) {
    case 'and': return evaluate(ast.a, f) && evaluate(ast.b, f);
    case 'or': return evaluate(ast.a, f) || evaluate(ast.b, f);
    case 'not': return !evaluate(ast.a, f);
    case 'in':
      if (ast.field === 'parents') return (f.parents || []).includes(ast.value);
      if (ast.field === 'owners') return f.ownerEmail === ast.value;
      return f.ownerEmail === ast.value || (f.sharedWith || []).includes(ast.value);
    case 'has': {
      const m = f[ast.field] || {};
      return Object.prototype.hasOwnProperty.call(m, ast.key) && m[ast.key] === ast.value;
    }
    default: break;
  }
  const v = f[ast.field];
  if (ast.op === 'contains') {
    if (ast.field === 'name') return nameContains(v || '', ast.value);
    if (ast.field === 'fullText') {
      const n = ast.value.toLowerCase();
      return `${f.name || ''} ${f.description || ''}`.toLowerCase().includes(n);
    }
    return String(v || '').includes(ast.value);
  }
  if (TIME_FIELDS.has(ast.field)) return v ? cmp(ast.op, Date.parse(v), ast.value) : false;
  if (BOOL_FIELDS.has(ast.field)) return cmp(ast.op, !!v, ast.value);
  return cmp(ast.op, v, ast.value);
}

function compileQuery(q) {
  if (q === undefined || q === null || String(q).trim() === '') return () => true;
  const ast = parseQuery(String(q));
  return (f) => evaluate(ast, f);
}

module.exports = { parseQuery, compileQuery, evaluate, QueryError, tokenize };
