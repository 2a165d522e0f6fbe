// kubectl kustomize renders each overlay, and the schemas (kubernetes-models, KEDA,
// prometheus-operator) accept every object, with unknown fields refused.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { OVERLAYS, copyTree, render, renderDir, validateStrict } from '../lib.mjs';
import { checkObjectsPresent } from '../checks.mjs';

describe('kustomize', () => {
  for (const overlay of OVERLAYS) {
    test(`${overlay} renders with the expected objects`, () => {
      const objects = render(overlay);
      assert.deepEqual(checkObjectsPresent(objects, overlay), []);
    });
  }

  test('a kustomization naming a missing file does not render (negative)', () => {
    const dir = copyTree();
    fs.rmSync(path.join(dir, 'base/cronjobs.yaml'));
    assert.throws(() => renderDir(path.join(dir, 'overlays/production')), /kubectl kustomize .* failed/);
    fs.rmSync(path.dirname(dir), { recursive: true });
  });

  test('an object missing or outside the namespace is found (negative)', () => {
    const objects = render('production').filter((o) => !(o.kind === 'CronJob' && o.metadata.name === 'ca-backup'));
    objects.find((o) => o.kind === 'Service').metadata.namespace = 'default';
    const problems = checkObjectsPresent(objects, 'production');
    assert.ok(problems.includes('CronJob/ca-backup is missing'), problems.join('\n'));
    assert.ok(problems.some((p) => /not in namespace/.test(p)), problems.join('\n'));
  });
});

describe('schemas, unknown fields refused', () => {
  for (const overlay of OVERLAYS) {
    test(`every object of ${overlay} validates`, async () => {
      for (const o of render(overlay)) await validateStrict(o);
    });
  }

  const dep = () => render('production').find((o) => o.kind === 'Deployment' && o.metadata.name === 'job-worker');
  test('a misspelt container field is refused (negative)', async () => {
    const d = dep();
    d.spec.template.spec.containers[0].imagePullPolcy = 'Always';
    await assert.rejects(validateStrict(d), /unknown field\(s\): spec\.template\.spec\.containers\.0\.imagePullPolcy/);
  });
  test('an unknown top-level spec field is refused (negative)', async () => {
    const d = dep();
    d.spec.replica = 3;
    await assert.rejects(validateStrict(d), /unknown field\(s\): spec\.replica$/);
  });
  test('a wrong type is refused (negative)', async () => {
    const d = dep();
    d.spec.template.spec.terminationGracePeriodSeconds = 'sixty';
    await assert.rejects(validateStrict(d), /terminationGracePeriodSeconds/);
  });
  test('an unknown field of the KEDA ScaledObject is refused (negative)', async () => {
    const so = render('production').find((o) => o.kind === 'ScaledObject');
    so.spec.minReplicas = 1;
    await assert.rejects(validateStrict(so), /unknown field\(s\): spec\.minReplicas/);
  });
  test('an unknown field of a PrometheusRule rule is refused (negative)', async () => {
    const pr = render('production').find((o) => o.kind === 'PrometheusRule');
    pr.spec.groups[0].rules[0].exprr = 'up';
    await assert.rejects(validateStrict(pr), /unknown field\(s\): spec\.groups\.0\.rules\.0\.exprr/);
  });
  test('an unknown field of a CronJob is refused (negative)', async () => {
    const cj = render('dev').find((o) => o.kind === 'CronJob');
    cj.spec.timezone = 'Etc/UTC';
    await assert.rejects(validateStrict(cj), /unknown field\(s\): spec\.timezone/);
  });
});
