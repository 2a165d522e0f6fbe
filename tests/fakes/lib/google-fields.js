'use strict';
/*
 * Google partial-response `fields` selector:
 *   fields=nextPageToken,files(id,name,owners(emailAddress)),kind
 *   fields=files/id,files/name      ('/' descends one level)
 *   fields=*                        (everything)
 * parseFields(s) -> tree, where tree is { key: true | subtree, '*': true }.
 * applyFields(obj, tree) -> a copy of obj keeping only the selected keys; arrays are
 * filtered element-wise. Throws FieldsError on unbalanced parentheses or empty names.
 */

class FieldsError extends Error {}

function parseFields(s) {
  let i = 0;
  function parseList(closing) {
    const tree = {};
    for (;;) {
      // one path: a/b/c optionally followed by (sublist)
      const path = [];
      let name = '';
      while (i < s.length && !',()'.includes(s[i])) {
        if (s[i] === '/') { if (!name) throw new FieldsError('empty field name'); path.push(name.trim()); name = ''; } else name += s[i];
        i++;
      }
      name = name.trim();
      if (!name) throw new FieldsError(`empty field name at ${i}`);
      path.push(name);
      let leaf = true;
      if (s[i] === '(') { i++; leaf = parseList(true); if (s[i] !== ')') throw new FieldsError('missing )'); i++; }
      let node = tree;
      for (let k = 0; k < path.length - 1; k++) {
        if (node[path[k]] === true) break;
        node[path[k]] = node[path[k]] || {};
        node = node[path[k]];
      }
      const last = path[path.length - 1];
      if (leaf === true || node[last] === true) node[last] = true;
      else node[last] = Object.assign(node[last] || {}, leaf);
      if (s[i] === ',') { i++; continue; }
      if (closing && s[i] === ')') return tree;
      if (!closing && i >= s.length) return tree;
      throw new FieldsError(`unexpected '${s[i] || 'end'}' at ${i}`);
    }
  }
  const t = parseList(false);
  return t;
}

function applyFields(obj, tree) {
  if (tree === true || tree['*'] === true) return obj;
  if (Array.isArray(obj)) return obj.map((o) => applyFields(o, tree));
  if (obj === null || typeof obj !== 'object') return obj;
  const out = {};
  for (const k of Object.keys(tree)) {
    if (obj[k] === undefined) continue;
    out[k] = applyFields(obj[k], tree[k]);
  }
  return out;
}

module.exports = { parseFields, applyFields, FieldsError };
