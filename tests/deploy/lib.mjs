// Helpers of the deploy/k8s checks: render an overlay with kubectl (kustomize), validate
// objects against the kubernetes-models / KEDA / prometheus-operator schemas with unknown
// fields refused, and read what the binaries and install scripts accept (--help).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const K8S = path.join(ROOT, 'deploy/k8s');
export const OVERLAYS = ['production', 'dev'];
export const BIN = process.env.CA_BIN || path.join(ROOT, 'build/bin');
export const SCRIPTS = path.join(ROOT, 'deploy/scripts');
export const DAEMONS = ['api-gateway', 'billing-webhook', 'drive-poller', 'job-worker'];
export const SCRIPT_NAMES = ['ca-migrate', 'ca-backup', 'ca-restore'];
// the image every pod of ours runs (the overlays' `images:` give it a registry and tag)
export const OUR_IMAGE = 'creator-automation';
export const KUBECTL = process.env.KUBECTL || 'kubectl';

// kubectl kustomize DIR -> the list of objects. Throws with kubectl's message.
export function renderDir(dir) {
  let out;
  try {
    out = execFileSync(KUBECTL, ['kustomize', dir], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 64 << 20,
    });
  } catch (e) {
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr || e.message}`);
  }
  return YAML.parseAllDocuments(out)
    .map((d) => d.toJS())
    .filter((d) => d != null);
}

const cache = new Map();
export function render(overlay) {
  if (!cache.has(overlay)) cache.set(overlay, renderDir(path.join(K8S, 'overlays', overlay)));
  return structuredClone(cache.get(overlay));
}

// A copy of deploy/k8s in a temporary folder (to break one file and see a check fail).
export function copyTree() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-k8s-'));
  fs.cpSync(K8S, path.join(dir, 'k8s'), { recursive: true });
  return path.join(dir, 'k8s');
}

// ---- schemas ----

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : [null, apiVersion];
  if (group === 'keda.sh') return `@kubernetes-models/keda/keda.sh/${version}/${kind}`;
  if (group === 'monitoring.coreos.com')
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/${version}/${kind}`;
  if (group === null) return `kubernetes-models/${version}/${kind}`;
  return `kubernetes-models/${group}/${version}/${kind}`;
}

export async function modelOf(obj) {
  const mod = await import(modulePath(obj.apiVersion, obj.kind));
  const cls = mod[obj.kind];
  if (typeof cls !== 'function') throw new Error(`no model for ${obj.apiVersion} ${obj.kind}`);
  return cls;
}

// The schema's own errors (types, required fields, enums...), or null.
function schemaErrors(cls, obj) {
  try {
    new cls(obj).validate();
    return null;
  } catch (e) {
    return e.message;
  }
}

// A value no schema accepts for a field it knows (not an object, string, number, boolean,
// array or null): a field set to it fails validation if and only if the schema knows the
// field. The published models accept unknown fields (no additionalProperties: false), so
// this is how they are refused here.
const SENTINEL = () => {};

function setAt(obj, keys, value) {
  let o = obj;
  for (let i = 0; i < keys.length - 1; i++) o = o[keys[i]];
  o[keys[keys.length - 1]] = value;
}

// Paths ("spec.template...") of fields the schema does not know.
function unknownFields(cls, obj) {
  const unknown = [];
  const walk = (value, keys) => {
    if (Array.isArray(value)) {
      value.forEach((v, i) => walk(v, [...keys, i]));
      return;
    }
    if (value === null || typeof value !== 'object') return;
    for (const k of Object.keys(value)) {
      const copy = structuredClone(obj);
      setAt(copy, [...keys, k], SENTINEL);
      if (schemaErrors(cls, copy) === null) {
        unknown.push([...keys, k].join('.'));
      } else {
        walk(value[k], [...keys, k]);
      }
    }
  };
  walk(obj, []);
  return unknown;
}

// Throws unless obj matches its schema with no field the schema does not know.
export async function validateStrict(obj) {
  const cls = await modelOf(obj);
  const name = `${obj.kind}/${obj.metadata?.name}`;
  const err = schemaErrors(cls, obj);
  if (err !== null) throw new Error(`${name}: ${err}`);
  const unknown = unknownFields(cls, obj);
  if (unknown.length > 0) throw new Error(`${name}: unknown field(s): ${unknown.join(', ')}`);
}

// ---- pods ----

// Every pod spec with where it is: [{obj, spec, where}]
export function podSpecs(objects) {
  const out = [];
  for (const o of objects) {
    if (['Deployment', 'StatefulSet', 'DaemonSet', 'Job'].includes(o.kind))
      out.push({ obj: o, spec: o.spec.template.spec, meta: o.spec.template.metadata });
    if (o.kind === 'CronJob')
      out.push({
        obj: o,
        spec: o.spec.jobTemplate.spec.template.spec,
        meta: o.spec.jobTemplate.spec.template.metadata,
      });
  }
  return out;
}

export function containersOf(spec) {
  return [...(spec.initContainers || []), ...(spec.containers || [])];
}

export const isOurs = (c) => imageName(c.image).endsWith(`/${OUR_IMAGE}`) || imageName(c.image) === OUR_IMAGE;

export function imageName(image) {
  const noDigest = image.split('@')[0];
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

export function imageTag(image) {
  const noDigest = image.split('@')[0];
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(colon + 1) : null;
}

// ---- the binaries' and scripts' --help ----

const helpCache = new Map();
// {vars: Set, subcommands: Set} of a daemon binary or an install script.
export function helpOf(program) {
  if (helpCache.has(program)) return helpCache.get(program);
  let file;
  if (DAEMONS.includes(program)) file = path.join(BIN, program);
  else if (SCRIPT_NAMES.includes(program)) file = path.join(SCRIPTS, program);
  else throw new Error(`${program}: not a binary or script of the install layout`);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing (make -j2 builds the binaries)`);
  const text = execFileSync(file, ['--help'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
  const vars = new Set();
  const subcommands = new Set();
  const usage = text.match(/^usage: \S+ \[([^\]]*)\]/m);
  if (usage) for (const s of usage[1].split('|')) if (!s.startsWith('-')) subcommands.add(s);
  for (const line of text.split('\n')) {
    let m = line.match(/^ {2}([A-Z][A-Z0-9_]+)\s/);
    if (m) vars.add(m[1]);
    m = line.match(/^ {2}([a-z][a-z-]*)\s{2,}/);
    if (m) subcommands.add(m[1]);
  }
  const h = { vars, subcommands, text };
  helpCache.set(program, h);
  return h;
}

// The program a container runs: "api-gateway", "ca-migrate"... (the install layout puts them
// all in /usr/local/bin), with its arguments; null when it runs none of them.
export function programOf(c) {
  const argv = [...(c.command || []), ...(c.args || [])];
  if (argv.length === 0) return null;
  const m = argv[0].match(/^\/usr\/local\/bin\/([^/]+)$/);
  return { name: m ? m[1] : argv[0], args: argv.slice(1), absolute: !!m };
}

// Names of every environment variable a container gets: env and envFrom (the rendered
// ConfigMaps' and Secrets' keys; a Secret only templated contributes its template's keys).
export function envNames(c, objects, templates) {
  const names = (c.env || []).map((e) => e.name);
  for (const ef of c.envFrom || []) {
    const ref = ef.configMapRef || ef.secretRef;
    const kind = ef.configMapRef ? 'ConfigMap' : 'Secret';
    const o = objects.find((x) => x.kind === kind && x.metadata.name === ref.name);
    const data = o ? { ...(o.data || {}), ...(o.stringData || {}) } : templates.get(ref.name) || {};
    names.push(...Object.keys(data).map((k) => (ef.prefix || '') + k));
  }
  return names;
}

// deploy/k8s/secrets/*.example.yaml -> Map(name -> {key: value})
export function secretTemplates(dir = path.join(K8S, 'secrets')) {
  const m = new Map();
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.example.yaml')) continue;
    const o = YAML.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    if (o.kind !== 'Secret') throw new Error(`${f} is not a Secret`);
    if (`${o.metadata.name}.example.yaml` !== f) throw new Error(`${f} defines ${o.metadata.name}`);
    m.set(o.metadata.name, { ...(o.data || {}), ...(o.stringData || {}) });
  }
  return m;
}

// Metric names a PromQL expression uses (identifiers followed by {, [ or a space/operator,
// not functions, keywords, label names or durations).
const PROMQL_WORDS = new Set([
  'sum', 'max', 'min', 'avg', 'count', 'rate', 'increase', 'irate', 'delta', 'by', 'without',
  'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'vector',
  'clamp_min', 'clamp_max', 'min_over_time', 'max_over_time', 'avg_over_time', 'absent',
  'histogram_quantile', 'offset', 'time', 'label_replace', 'topk', 'bottomk',
]);
export function metricNames(expr) {
  const noStrings = expr.replace(/"[^"]*"/g, '""').replace(/(^|[^a-zA-Z_:])\d+(\.\d+)?([eE][+-]?\d+)?/g, '$1 0');
  const noLabels = noStrings.replace(/\{[^}]*\}/g, '{}').replace(/\[[^\]]*\]/g, '[]');
  const noGroups = noLabels.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1');
  const names = new Set();
  for (const m of noGroups.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    if (!PROMQL_WORDS.has(m[0])) names.add(m[0]);
  }
  return names;
}

// Metric names the daemons register (metrics_counter/gauge/histogram in common/ and services/).
export function registeredMetrics() {
  const names = new Set();
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.c'))
        for (const m of fs
          .readFileSync(p, 'utf8')
          .matchAll(/metrics_(?:counter|gauge|histogram)\(\s*"([a-z_:][a-z0-9_:]*)"/g))
          names.add(m[1]);
    }
  };
  walk(path.join(ROOT, 'common'));
  walk(path.join(ROOT, 'services'));
  // metrics.c's own counter of dropped series
  const metricsC = fs.readFileSync(path.join(ROOT, 'common/metrics.c'), 'utf8');
  for (const m of metricsC.matchAll(/#define \w+_NAME "([a-z_]+)"/g)) names.add(m[1]);
  return names;
}
