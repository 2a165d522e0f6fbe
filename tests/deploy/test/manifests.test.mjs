// The properties of the rendered overlays (checks.mjs), each shown to fail on a broken copy.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import YAML from 'yaml';
import { OVERLAYS, copyTree, render, secretTemplates } from '../lib.mjs';
import * as C from '../checks.mjs';

const templates = secretTemplates();
const find = (objects, kind, name) => objects.find((o) => o.kind === kind && o.metadata.name === name);
const container = (objects, name) => find(objects, 'Deployment', name).spec.template.spec.containers[0];
const cronContainer = (objects, name) => find(objects, 'CronJob', name).spec.jobTemplate.spec.template.spec.containers[0];
const expectProblem = (problems, re) => assert.ok(problems.some((p) => re.test(p)), `expected ${re}, got:\n${problems.join('\n')}`);

const CHECKS = {
  images: (o) => C.checkImages(o),
  'env vars are in each binary\'s --help': (o) => C.checkEnvVars(o, templates),
  'commands exist with known subcommands': (o) => C.checkCommands(o),
  'Secrets and ConfigMaps are defined or templated': (o) => C.checkReferences(o, templates),
  'pod security': (o) => C.checkSecurity(o),
  deployments: (o) => C.checkDeployments(o),
  'cron jobs': (o) => C.checkCronJobs(o),
  'ingress and network policies': (o) => C.checkIngressAndPolicies(o),
  autoscaling: (o, overlay) => C.checkAutoscaling(o, overlay),
  'metric names are real': (o) => C.checkMetricNames(o),
};

for (const overlay of OVERLAYS) {
  describe(`${overlay} overlay`, () => {
    for (const [name, check] of Object.entries(CHECKS)) {
      test(name, () => assert.deepEqual(check(render(overlay), overlay), []));
    }
  });
}

describe('each check finds a breakage (negatives)', () => {
  test('images: latest, untagged, no registry', () => {
    const o = render('production');
    container(o, 'api-gateway').image = 'registry.example.com/creator-automation:latest';
    container(o, 'billing-webhook').image = 'registry.example.com/creator-automation';
    cronContainer(o, 'ca-backup').image = 'creator-automation:0.1.0';
    const p = C.checkImages(o);
    expectProblem(p, /api-gateway.*:latest has no pinned tag/);
    expectProblem(p, /billing-webhook.*has no pinned tag/);
    expectProblem(p, /ca-backup.*names no registry/);
  });

  test('images: an overlay without images: renders untagged images', () => {
    const dir = copyTree();
    const k = path.join(dir, 'overlays/dev/kustomization.yaml');
    const doc = YAML.parse(fs.readFileSync(k, 'utf8'));
    delete doc.images;
    fs.writeFileSync(k, YAML.stringify(doc));
    const p = C.checkImages(renderDirSafe(path.join(dir, 'overlays/dev')));
    fs.rmSync(path.dirname(dir), { recursive: true });
    expectProblem(p, /image creator-automation has no pinned tag/);
  });

  test('env vars: one the binary does not know, in env and in the ConfigMap', () => {
    const o = render('dev');
    container(o, 'job-worker').env.push({ name: 'WORKER_THREADS', value: '4' });
    cronContainer(o, 'ca-backup').env.push({ name: 'BACKUP_KEEP', value: '4' });
    o.find((x) => x.kind === 'ConfigMap' && x.metadata.name.startsWith('ca-billing-webhook-config')).data.PUBLIC_URL = 'https://x';
    const p = C.checkEnvVars(o, templates);
    expectProblem(p, /job-worker container job-worker: WORKER_THREADS is not a variable of job-worker/);
    expectProblem(p, /ca-backup.*BACKUP_KEEP is not a variable of ca-backup/);
    expectProblem(p, /billing-webhook.*PUBLIC_URL is not a variable of billing-webhook/);
  });

  test('commands: an unknown subcommand, program, or path', () => {
    const o = render('production');
    cronContainer(o, 'ca-cleanup-job-worker').command = ['/usr/local/bin/job-worker', 'clean'];
    find(o, 'Job', 'ca-migrate').spec.template.spec.containers[0].command = ['/usr/local/bin/ca-migrations'];
    find(o, 'Deployment', 'drive-poller').spec.template.spec.initContainers[0].command = ['drive-poller', 'wait-schema'];
    const p = C.checkCommands(o);
    expectProblem(p, /job-worker clean: not a subcommand/);
    expectProblem(p, /ca-migrations is not installed/);
    expectProblem(p, /drive-poller.*runs drive-poller, not \/usr\/local\/bin/);
  });

  test('references: an undefined Secret, a key missing from its template, an unread key, migration credentials in a Deployment', () => {
    const o = render('production');
    const gw = container(o, 'api-gateway');
    gw.env.push({ name: 'X', valueFrom: { secretKeyRef: { name: 'ca-nowhere', key: 'X' } } });
    gw.env.push({ name: 'MIGRATION_DATABASE_URL', valueFrom: { secretKeyRef: { name: 'ca-migrate', key: 'MIGRATION_DATABASE_URL' } } });
    const t = structuredClone(templates);
    delete t.get('ca-billing-webhook').STRIPE_WEBHOOK_SECRET;
    t.get('ca-drive-poller').SESSION_SECRET = 'x';
    find(o, 'Deployment', 'job-worker').spec.template.spec.containers[0].envFrom[0].configMapRef.name = 'ca-gone';
    const p = C.checkReferences(o, t);
    expectProblem(p, /Secret ca-nowhere is neither defined nor templated/);
    expectProblem(p, /api-gateway.*migration credentials outside the Job ca-migrate/);
    expectProblem(p, /Secret ca-billing-webhook has no key STRIPE_WEBHOOK_SECRET/);
    expectProblem(p, /template ca-drive-poller: key SESSION_SECRET is read by no container/);
    expectProblem(p, /ConfigMap ca-gone is neither defined nor templated/);
  });

  test('pod security: each rule', () => {
    const o = render('dev');
    const gw = find(o, 'Deployment', 'api-gateway').spec.template.spec;
    gw.automountServiceAccountToken = true;
    gw.securityContext.seccompProfile.type = 'Unconfined';
    gw.initContainers[0].securityContext.allowPrivilegeEscalation = true;
    gw.containers[0].securityContext.readOnlyRootFilesystem = false;
    gw.containers[0].securityContext.capabilities.drop = ['NET_RAW'];
    const w = find(o, 'Deployment', 'job-worker').spec.template.spec;
    w.securityContext.runAsUser = 0;
    w.securityContext.runAsNonRoot = false;
    w.volumes = w.volumes.filter((v) => v.name !== 'tmp');
    delete find(o, 'StatefulSet', 'redis').spec.template.spec.containers[0].resources;
    const p = C.checkSecurity(o);
    for (const re of [
      /api-gateway: automountServiceAccountToken/,
      /api-gateway: seccomp/,
      /api-gateway container wait-schema: allowPrivilegeEscalation/,
      /api-gateway container api-gateway: readOnlyRootFilesystem/,
      /api-gateway container api-gateway: capabilities do not drop ALL/,
      /job-worker: runAsNonRoot/,
      /job-worker container job-worker: runs as uid 0/,
      /job-worker container job-worker: \/tmp is not an emptyDir/,
      /redis container redis: no cpu\/memory requests/,
    ])
      expectProblem(p, re);
  });

  test('deployments: probes, preStop, grace, spread, wait-schema, RETENTION_AT, replicas', () => {
    const o = render('production');
    const w = find(o, 'Deployment', 'job-worker');
    w.spec.template.spec.terminationGracePeriodSeconds = 30;
    w.spec.replicas = 2;
    const gw = find(o, 'Deployment', 'api-gateway').spec.template.spec;
    delete gw.containers[0].readinessProbe;
    delete gw.containers[0].lifecycle;
    gw.topologySpreadConstraints = [];
    const bw = find(o, 'Deployment', 'billing-webhook').spec.template.spec;
    bw.initContainers = [];
    bw.containers[0].env.find((e) => e.name === 'RETENTION_AT').value = '02:00';
    bw.containers[0].livenessProbe.timeoutSeconds = 60;
    const p = C.checkDeployments(o);
    for (const re of [
      /job-worker: terminationGracePeriodSeconds 30 < 39/,
      /job-worker: sets replicas/,
      /api-gateway: no readinessProbe/,
      /api-gateway: no preStop sleep/,
      /api-gateway: no topologySpreadConstraints/,
      /billing-webhook: no init container "billing-webhook wait-schema"/,
      /billing-webhook: RETENTION_AT is not off/,
      /billing-webhook: livenessProbe timeout 60/,
    ])
      expectProblem(p, re);
  });

  test('cron jobs: schedule, time zone, concurrency, a missing cleanup, backup retention', () => {
    const o = render('production');
    find(o, 'CronJob', 'ca-cleanup-api-gateway').spec.schedule = '0 3 * * *';
    find(o, 'CronJob', 'ca-cleanup-job-worker').spec.timeZone = 'Europe/Paris';
    find(o, 'CronJob', 'ca-cleanup-billing-webhook').spec.concurrencyPolicy = 'Allow';
    const rest = o.filter((x) => x.metadata.name !== 'ca-cleanup-drive-poller');
    cronContainer(rest, 'ca-backup').env = cronContainer(rest, 'ca-backup').env.filter((e) => e.name !== 'BACKUP_KEEP_DAYS');
    const p = C.checkCronJobs(rest);
    for (const re of [/ca-cleanup-api-gateway: schedule/, /ca-cleanup-job-worker: timeZone/, /ca-cleanup-billing-webhook: concurrencyPolicy/, /no CronJob runs drive-poller cleanup/, /ca-backup: no BACKUP_KEEP_DAYS/])
      expectProblem(p, re);
  });

  test('ingress and policies: /metrics public, a webhook path widened, the worker exposed, Redis open', () => {
    const o = render('dev');
    const paths = find(o, 'Ingress', 'creator-automation').spec.rules[0].http.paths;
    paths.find((x) => x.path === '/metrics').backend.service.name = 'api-gateway';
    paths.find((x) => x.path === '/webhooks/stripe').pathType = 'Prefix';
    paths.push({ path: '/webhooks', pathType: 'Prefix', backend: { service: { name: 'billing-webhook', port: { name: 'http' } } } });
    find(o, 'NetworkPolicy', 'from-ingress-controller').spec.podSelector.matchExpressions[0].values.push('job-worker');
    find(o, 'NetworkPolicy', 'redis-from-services').spec.ingress[0].from.push({ namespaceSelector: {} });
    const p = C.checkIngressAndPolicies(o);
    for (const re of [/\/metrics is not Prefix -> ca-no-route/, /\/webhooks\/stripe is not Exact/, /unexpected path \/webhooks/, /billing-webhook gets more than its webhook path/, /job-worker reachable from the ingress controller/, /redis is reachable from more/])
      expectProblem(p, re);
  });

  test('autoscaling: min replicas 0, another metric, no HPA', () => {
    const o = render('production');
    const so = find(o, 'ScaledObject', 'job-worker');
    so.spec.minReplicaCount = 0;
    so.spec.triggers[0].metadata.query = 'max(ca_worker_queue_depth{queue="delayed"})';
    const p = C.checkAutoscaling(o.filter((x) => x.kind !== 'HorizontalPodAutoscaler'), 'production');
    for (const re of [/minReplicaCount 0/, /not on ca_worker_queue_depth/, /no CPU HPA/]) expectProblem(p, re);
  });

  test('metric names: a made-up one in an alert and in the scaler', () => {
    const o = render('production');
    find(o, 'PrometheusRule', 'creator-automation').spec.groups[0].rules[0].expr = 'max(ca_worker_queue_length{queue="ready"}) > 5';
    find(o, 'ScaledObject', 'job-worker').spec.triggers[0].metadata.query = 'sum(ca_jobs_waiting)';
    const p = C.checkMetricNames(o);
    expectProblem(p, /CAJobQueueBacklog: metric ca_worker_queue_length is exported by nothing/);
    expectProblem(p, /ScaledObject\/job-worker: metric ca_jobs_waiting is exported by nothing/);
  });
});

import { renderDir } from '../lib.mjs';
function renderDirSafe(dir) {
  return renderDir(dir);
}
