// The Secret templates hold placeholders only, and filled copies stay out of git.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { ROOT, secretTemplates } from '../lib.mjs';

// a value is a placeholder when it says so (CHANGE-ME) or is empty (an optional key)
export function realLookingValues(templates) {
  const problems = [];
  for (const [name, keys] of templates)
    for (const [k, v] of Object.entries(keys))
      if (v !== '' && !String(v).includes('CHANGE-ME')) problems.push(`${name}.${k} looks like a real value`);
  return problems;
}

test('every template value is a placeholder', () => {
  assert.deepEqual(realLookingValues(secretTemplates()), []);
});

test('a real-looking value is found (negative)', () => {
  const t = secretTemplates();
  t.get('ca-api-gateway').SESSION_SECRET = 'c2VjcmV0LXNlY3JldC1zZWNyZXQ=';
  assert.deepEqual(realLookingValues(t), ['ca-api-gateway.SESSION_SECRET looks like a real value']);
});

test('a filled copy in deploy/k8s/secrets is ignored by git, the templates are not', () => {
  const ignored = (p) => {
    try {
      execFileSync('git', ['-C', ROOT, 'check-ignore', '-q', '--no-index', p]);
      return true;
    } catch {
      return false;
    }
  };
  assert.equal(ignored('deploy/k8s/secrets/ca-api-gateway.yaml'), true);
  assert.equal(ignored('deploy/k8s/secrets/ca-api-gateway.example.yaml'), false);
  assert.equal(ignored('deploy/k8s/overlays/dev/kustomization.yaml'), false, 'check-ignore answers false for a tracked path');
});
