// The alert rules parse (promtool check rules) and fire when they should and not otherwise
// (promtool test rules with tests/deploy/alerts_test.yaml).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import YAML from 'yaml';
import { ROOT, render } from '../lib.mjs';

const local = path.join(ROOT, 'tests/deploy/.tools/promtool');
const PROMTOOL = process.env.PROMTOOL || (fs.existsSync(local) ? local : 'promtool');

// promtool on the groups; returns [exit status, output]
function promtool(groups) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ca-rules-'));
  fs.writeFileSync(path.join(dir, 'rules.yaml'), YAML.stringify({ groups }));
  fs.copyFileSync(path.join(ROOT, 'tests/deploy/alerts_test.yaml'), path.join(dir, 'alerts_test.yaml'));
  try {
    const out = [];
    for (const args of [['check', 'rules', 'rules.yaml'], ['test', 'rules', 'alerts_test.yaml']])
      out.push(execFileSync(PROMTOOL, args, { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
    return [0, out.join('')];
  } catch (e) {
    if (e.code === 'ENOENT') throw new Error(`${PROMTOOL} is missing: make deps`);
    return [e.status, `${e.stdout}${e.stderr}`];
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
}

const groups = () => render('production').find((o) => o.kind === 'PrometheusRule').spec.groups;
const rule = (g, name) => g.flatMap((x) => x.rules).find((r) => r.alert === name);

test('the alert rules parse and pass their promtool unit tests', () => {
  const [rc, out] = promtool(groups());
  assert.equal(rc, 0, out);
  assert.match(out, /SUCCESS/);
});

test('CAPodNotReady counting finished Job pods fails its test (negative)', () => {
  const g = groups();
  rule(g, 'CAPodNotReady').expr = 'kube_pod_status_ready{namespace="creator-automation",condition="false"} == 1';
  const [rc, out] = promtool(g);
  assert.notEqual(rc, 0);
  assert.match(out, /CAPodNotReady/);
});

test('CAJobQueueStalled ignoring completions fails its test (negative)', () => {
  const g = groups();
  rule(g, 'CAJobQueueStalled').expr = 'min_over_time(max(ca_worker_queue_depth{queue="ready"})[30m:1m]) > 0';
  const [rc, out] = promtool(g);
  assert.notEqual(rc, 0);
  assert.match(out, /CAJobQueueStalled/);
});

test('CAScheduledJobLate without the creation time never fires for a CronJob that never succeeded (negative)', () => {
  const g = groups();
  rule(g, 'CAScheduledJobLate').expr =
    'time() - (kube_cronjob_status_last_successful_time{namespace="creator-automation"} > 0) > 26 * 3600';
  const [rc, out] = promtool(g);
  assert.notEqual(rc, 0);
  assert.match(out, /CAScheduledJobLate/);
});

test('a malformed expression is refused (negative)', () => {
  const g = groups();
  rule(g, 'CAJobFailureRate').expr = 'sum(rate(ca_worker_jobs_total{status="failed"}[15m])';
  const [rc, out] = promtool(g);
  assert.notEqual(rc, 0);
  assert.match(out, /CAJobFailureRate|parse error/);
});
