// The properties deploy/k8s must have. Each check takes the rendered objects of an overlay
// and returns the problems it finds ([] when none); the tests run each on both overlays and
// on a broken copy, where it must find the breakage.
import {
  DAEMONS,
  OUR_IMAGE,
  SCRIPT_NAMES,
  containersOf,
  envNames,
  helpOf,
  imageName,
  imageTag,
  isOurs,
  metricNames,
  podSpecs,
  programOf,
  registeredMetrics,
} from './lib.mjs';

const where = (p, c) => `${p.obj.kind}/${p.obj.metadata.name}${c ? ` container ${c.name}` : ''}`;

// Objects that must be in every overlay.
export const EXPECTED = [
  'Namespace/creator-automation',
  ...DAEMONS.flatMap((d) => [`Deployment/${d}`, `Service/${d}`, `PodDisruptionBudget/${d}`]),
  'Job/ca-migrate',
  ...DAEMONS.map((d) => `CronJob/ca-cleanup-${d}`),
  'CronJob/ca-backup',
  'PersistentVolumeClaim/ca-backups',
  'HorizontalPodAutoscaler/api-gateway',
  'NetworkPolicy/default-deny-ingress',
  'NetworkPolicy/from-ingress-controller',
  'NetworkPolicy/from-monitoring',
  'Ingress/creator-automation',
];
export const EXPECTED_BY_OVERLAY = {
  production: ['ScaledObject/job-worker', 'PodMonitor/creator-automation', 'PrometheusRule/creator-automation'],
  dev: [
    'StatefulSet/postgres',
    'Service/postgres',
    'StatefulSet/redis',
    'Service/redis',
    'NetworkPolicy/postgres-from-services',
    'NetworkPolicy/redis-from-services',
  ],
};

export function checkObjectsPresent(objects, overlay) {
  const have = new Set(objects.map((o) => `${o.kind}/${o.metadata.name}`));
  const problems = [...EXPECTED, ...(EXPECTED_BY_OVERLAY[overlay] || [])]
    .filter((n) => !have.has(n))
    .map((n) => `${n} is missing`);
  for (const o of objects)
    if (o.kind !== 'Namespace' && o.metadata.namespace !== 'creator-automation')
      problems.push(`${o.kind}/${o.metadata.name} is not in namespace creator-automation`);
  return problems;
}

// Every image has a tag (or digest), never "latest"; ours carries the overlay's registry.
export function checkImages(objects) {
  const problems = [];
  for (const p of podSpecs(objects))
    for (const c of containersOf(p.spec)) {
      const tag = imageTag(c.image);
      if (!c.image.includes('@') && (tag === null || tag === 'latest'))
        problems.push(`${where(p, c)}: image ${c.image} has no pinned tag`);
      if (isOurs(c) && imageName(c.image) === OUR_IMAGE)
        problems.push(`${where(p, c)}: image ${c.image} names no registry (set images: in the overlay)`);
    }
  return problems;
}

// The env vars a container sets exist in its program's --help.
export function checkEnvVars(objects, templates) {
  const problems = [];
  for (const p of podSpecs(objects))
    for (const c of containersOf(p.spec)) {
      if (!isOurs(c)) continue;
      const prog = programOf(c);
      if (prog === null) {
        problems.push(`${where(p, c)}: no command`);
        continue;
      }
      let help;
      try {
        help = helpOf(prog.name);
      } catch (e) {
        problems.push(`${where(p, c)}: ${e.message}`);
        continue;
      }
      for (const n of envNames(c, objects, templates))
        if (!help.vars.has(n)) problems.push(`${where(p, c)}: ${n} is not a variable of ${prog.name} (--help)`);
    }
  return problems;
}

// Every command a container of ours runs is a binary or script of the install layout, with
// a subcommand it knows.
export function checkCommands(objects) {
  const problems = [];
  for (const p of podSpecs(objects))
    for (const c of containersOf(p.spec)) {
      if (!isOurs(c)) continue;
      const prog = programOf(c);
      if (prog === null || !prog.absolute) {
        problems.push(`${where(p, c)}: runs ${prog?.name ?? 'nothing'}, not /usr/local/bin/<program>`);
        continue;
      }
      if (![...DAEMONS, ...SCRIPT_NAMES].includes(prog.name)) {
        problems.push(`${where(p, c)}: /usr/local/bin/${prog.name} is not installed`);
        continue;
      }
      const help = helpOf(prog.name);
      if (DAEMONS.includes(prog.name)) {
        if (prog.args.length !== 1 || !help.subcommands.has(prog.args[0]))
          problems.push(`${where(p, c)}: ${prog.name} ${prog.args.join(' ')}: not a subcommand (--help)`);
      } else if (prog.args.length !== 0) {
        problems.push(`${where(p, c)}: ${prog.name} takes no argument here`);
      }
    }
  return problems;
}

// Every Secret and ConfigMap a pod or the Ingress names is rendered or templated (with the
// key, unless the reference is optional); every template key is read by some container;
// the migration credentials only in the migration Job.
export function checkReferences(objects, templates) {
  const problems = [];
  const defined = (kind, name) => objects.some((o) => o.kind === kind && o.metadata.name === name);
  const keysOf = (kind, name) => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    if (o) return new Set(Object.keys({ ...(o.data || {}), ...(o.stringData || {}) }));
    if (kind === 'Secret' && templates.has(name)) return new Set(Object.keys(templates.get(name)));
    return null;
  };
  const used = new Map(); // secret -> Set of keys read
  const use = (name, key) => {
    if (!used.has(name)) used.set(name, new Set());
    used.get(name).add(key);
  };
  for (const p of podSpecs(objects)) {
    for (const c of containersOf(p.spec)) {
      for (const e of c.env || []) {
        const ref = e.valueFrom?.secretKeyRef || e.valueFrom?.configMapKeyRef;
        if (!ref) continue;
        const kind = e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap';
        if (kind === 'Secret') use(ref.name, ref.key);
        const keys = keysOf(kind, ref.name);
        if (keys === null) problems.push(`${where(p, c)}: ${kind} ${ref.name} is neither defined nor templated`);
        else if (!keys.has(ref.key) && !ref.optional)
          problems.push(`${where(p, c)}: ${kind} ${ref.name} has no key ${ref.key}`);
        if (ref.key === 'MIGRATION_DATABASE_URL' || ref.name === 'ca-migrate')
          if (!(p.obj.kind === 'Job' && p.obj.metadata.name === 'ca-migrate'))
            problems.push(`${where(p, c)}: the migration credentials outside the Job ca-migrate`);
      }
      for (const ef of c.envFrom || []) {
        const kind = ef.configMapRef ? 'ConfigMap' : 'Secret';
        const name = (ef.configMapRef || ef.secretRef).name;
        if (keysOf(kind, name) === null) problems.push(`${where(p, c)}: ${kind} ${name} is neither defined nor templated`);
        if (kind === 'Secret') for (const k of keysOf(kind, name) || []) use(name, k);
      }
    }
    for (const v of p.spec.volumes || []) {
      if (v.configMap && !defined('ConfigMap', v.configMap.name))
        problems.push(`${where(p)}: volume ${v.name}: ConfigMap ${v.configMap.name} is not defined`);
      if (v.secret && keysOf('Secret', v.secret.secretName) === null)
        problems.push(`${where(p)}: volume ${v.name}: Secret ${v.secret.secretName} is neither defined nor templated`);
      if (v.persistentVolumeClaim && !defined('PersistentVolumeClaim', v.persistentVolumeClaim.claimName))
        problems.push(`${where(p)}: volume ${v.name}: PVC ${v.persistentVolumeClaim.claimName} is not defined`);
    }
  }
  for (const o of objects.filter((x) => x.kind === 'Ingress'))
    for (const t of o.spec.tls || [])
      if (keysOf('Secret', t.secretName) === null) problems.push(`Ingress ${o.metadata.name}: Secret ${t.secretName} is neither defined nor templated`);
  // each template holds only keys some container of this overlay reads (each service only
  // the keys it uses); templates of another overlay's objects are skipped
  for (const [name, keys] of templates) {
    if (!used.has(name)) continue;
    for (const k of Object.keys(keys))
      if (!used.get(name).has(k)) problems.push(`Secret template ${name}: key ${k} is read by no container`);
  }
  return problems;
}

// Pod security: non-root, read-only root with /tmp an emptyDir, no capabilities, no
// privilege escalation, RuntimeDefault seccomp, no service account token; our image as 10001.
export function checkSecurity(objects) {
  const problems = [];
  for (const p of podSpecs(objects)) {
    const s = p.spec;
    const psc = s.securityContext || {};
    if (s.automountServiceAccountToken !== false) problems.push(`${where(p)}: automountServiceAccountToken is not false`);
    if (psc.runAsNonRoot !== true) problems.push(`${where(p)}: runAsNonRoot is not true`);
    if (psc.seccompProfile?.type !== 'RuntimeDefault') problems.push(`${where(p)}: seccomp is not RuntimeDefault`);
    if (s.hostNetwork || s.hostPID || s.hostIPC) problems.push(`${where(p)}: shares a host namespace`);
    for (const c of containersOf(s)) {
      const sc = c.securityContext || {};
      if (sc.allowPrivilegeEscalation !== false) problems.push(`${where(p, c)}: allowPrivilegeEscalation is not false`);
      if (sc.readOnlyRootFilesystem !== true) problems.push(`${where(p, c)}: readOnlyRootFilesystem is not true`);
      if (sc.privileged) problems.push(`${where(p, c)}: privileged`);
      if (!(sc.capabilities?.drop || []).includes('ALL')) problems.push(`${where(p, c)}: capabilities do not drop ALL`);
      if ((sc.capabilities?.add || []).length > 0) problems.push(`${where(p, c)}: adds capabilities`);
      if (sc.runAsUser === 0 || sc.runAsNonRoot === false) problems.push(`${where(p, c)}: runs as root`);
      if (!c.resources?.requests?.cpu || !c.resources?.requests?.memory || !c.resources?.limits?.memory)
        problems.push(`${where(p, c)}: no cpu/memory requests and memory limit`);
      if (isOurs(c)) {
        const uid = sc.runAsUser ?? psc.runAsUser;
        if (uid !== 10001) problems.push(`${where(p, c)}: runs as uid ${uid}, not 10001`);
        if (!(p.spec.initContainers || []).includes(c)) {
          const tmp = (c.volumeMounts || []).find((m) => m.mountPath === '/tmp');
          const vol = tmp && (s.volumes || []).find((v) => v.name === tmp.name);
          if (!vol?.emptyDir) problems.push(`${where(p, c)}: /tmp is not an emptyDir`);
        }
      }
    }
  }
  return problems;
}

// The preStop pause must fit in the grace period, and the worker's grace must cover
// preStop + its longest drain (WORKER_DRAIN_SECONDS at most 24) + handing the jobs back.
const WORKER_DRAIN_MAX_S = 24;
const HAND_BACK_S = 10;
function sleepSeconds(c) {
  const cmd = c.lifecycle?.preStop?.exec?.command || [];
  return cmd.length === 2 && /(^|\/)sleep$/.test(cmd[0]) ? Number(cmd[1]) : c.lifecycle?.preStop?.sleep?.seconds;
}

// Deployments: probes, preStop, grace, spread, wait-schema, RETENTION_AT=off, no replicas
// where an autoscaler owns them.
export function checkDeployments(objects) {
  const problems = [];
  for (const d of DAEMONS) {
    const dep = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === d);
    if (!dep) {
      problems.push(`Deployment ${d} is missing`);
      continue;
    }
    const s = dep.spec.template.spec;
    const c = s.containers.find((x) => x.name === d);
    const w = `Deployment/${d}`;
    if (!c) {
      problems.push(`${w}: no container ${d}`);
      continue;
    }
    for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
      const pr = c[probe];
      if (!pr?.httpGet) problems.push(`${w}: no ${probe}`);
      else if (!(pr.timeoutSeconds >= 1 && pr.timeoutSeconds <= 10)) problems.push(`${w}: ${probe} timeout ${pr.timeoutSeconds}`);
    }
    if (c.livenessProbe?.httpGet?.path !== '/healthz') problems.push(`${w}: liveness is not /healthz`);
    if (c.readinessProbe?.httpGet?.path !== '/readyz') problems.push(`${w}: readiness is not /readyz`);
    if (c.startupProbe && c.startupProbe.periodSeconds * c.startupProbe.failureThreshold < 30)
      problems.push(`${w}: the startup probe gives less than 30 s`);
    const pause = sleepSeconds(c);
    if (!(pause > 0)) problems.push(`${w}: no preStop sleep`);
    const grace = s.terminationGracePeriodSeconds ?? 30;
    const need = (pause || 0) + (d === 'job-worker' ? WORKER_DRAIN_MAX_S + HAND_BACK_S : 30);
    if (grace < need) problems.push(`${w}: terminationGracePeriodSeconds ${grace} < ${need}`);
    if (!(s.topologySpreadConstraints || []).length) problems.push(`${w}: no topologySpreadConstraints`);
    const init = (s.initContainers || []).find((i) => programOf(i)?.args?.[0] === 'wait-schema');
    if (!init || programOf(init).name !== d) problems.push(`${w}: no init container "${d} wait-schema"`);
    const ret = (c.env || []).find((e) => e.name === 'RETENTION_AT');
    if (ret?.value !== 'off') problems.push(`${w}: RETENTION_AT is not off`);
    const port = (c.env || []).find((e) => e.name === 'PORT')?.value;
    if (String(c.ports?.[0]?.containerPort) !== port) problems.push(`${w}: PORT ${port} is not the container port`);
    if (c.command?.[1] !== 'serve') problems.push(`${w}: does not run serve`);
    const owned = objects.some(
      (o) =>
        (o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === d) ||
        (o.kind === 'ScaledObject' && o.spec.scaleTargetRef.name === d),
    );
    if (owned && dep.spec.replicas !== undefined) problems.push(`${w}: sets replicas, which its autoscaler owns`);
  }
  return problems;
}

// CronJobs: each daemon's cleanup at 02:00 Etc/UTC, Forbid; the backup with retention.
export function checkCronJobs(objects) {
  const problems = [];
  const crons = objects.filter((o) => o.kind === 'CronJob');
  for (const d of DAEMONS) {
    const cj = crons.find((o) => {
      const c = o.spec.jobTemplate.spec.template.spec.containers[0];
      const prog = programOf(c);
      return prog?.name === d && prog.args[0] === 'cleanup';
    });
    if (!cj) {
      problems.push(`no CronJob runs ${d} cleanup`);
      continue;
    }
    const w = `CronJob/${cj.metadata.name}`;
    if (cj.spec.schedule !== '0 2 * * *') problems.push(`${w}: schedule ${cj.spec.schedule}, not 02:00`);
    if (cj.spec.timeZone !== 'Etc/UTC') problems.push(`${w}: timeZone ${cj.spec.timeZone}`);
    if (cj.spec.concurrencyPolicy !== 'Forbid') problems.push(`${w}: concurrencyPolicy ${cj.spec.concurrencyPolicy}`);
  }
  const backup = crons.find((o) => programOf(o.spec.jobTemplate.spec.template.spec.containers[0])?.name === 'ca-backup');
  if (!backup) problems.push('no CronJob runs ca-backup');
  else {
    const spec = backup.spec.jobTemplate.spec.template.spec;
    const c = spec.containers[0];
    const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
    const mount = (c.volumeMounts || []).find((m) => m.mountPath === env.BACKUP_DIR);
    const vol = mount && spec.volumes.find((v) => v.name === mount.name);
    if (!vol?.persistentVolumeClaim) problems.push('ca-backup: BACKUP_DIR is not on a PVC');
    if (!(Number(env.BACKUP_KEEP_DAYS) > 0)) problems.push('ca-backup: no BACKUP_KEEP_DAYS retention');
    if (backup.spec.concurrencyPolicy !== 'Forbid' || backup.spec.timeZone !== 'Etc/UTC')
      problems.push('ca-backup: not Forbid / Etc/UTC');
  }
  return problems;
}

// Ingress: the five routes, /metrics to nothing; NetworkPolicies as documented.
export function checkIngressAndPolicies(objects) {
  const problems = [];
  const ing = objects.find((o) => o.kind === 'Ingress');
  if (!ing) return ['no Ingress'];
  if (!(ing.spec.tls || []).length) problems.push('Ingress: no TLS');
  const rules = ing.spec.rules || [];
  if (rules.length !== 1) problems.push(`Ingress: ${rules.length} rules, expected one host`);
  const paths = rules.flatMap((r) => r.http.paths);
  const want = [
    ['/', 'Prefix', 'api-gateway'],
    ['/api', 'Prefix', 'api-gateway'],
    ['/webhooks/stripe', 'Exact', 'billing-webhook'],
    ['/webhooks/drive', 'Exact', 'drive-poller'],
    ['/metrics', 'Prefix', 'ca-no-route'],
  ];
  for (const [p, type, svc] of want) {
    const got = paths.find((x) => x.path === p);
    if (!got || got.pathType !== type || got.backend.service?.name !== svc)
      problems.push(`Ingress: ${p} is not ${type} -> ${svc}`);
  }
  for (const x of paths)
    if (!want.some(([p]) => p === x.path)) problems.push(`Ingress: unexpected path ${x.path}`);
  for (const svc of ['billing-webhook', 'drive-poller'])
    if (paths.filter((x) => x.backend.service?.name === svc).some((x) => x.pathType !== 'Exact'))
      problems.push(`Ingress: ${svc} gets more than its webhook path`);
  const noRoute = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'ca-no-route');
  if (!noRoute || noRoute.spec.selector) problems.push('Service ca-no-route must exist without a selector');
  if (objects.some((o) => o.kind === 'Endpoints' || o.kind === 'EndpointSlice'))
    problems.push('an Endpoints object could give ca-no-route a backend');

  const pols = objects.filter((o) => o.kind === 'NetworkPolicy');
  const deny = pols.find((p) => Object.keys(p.spec.podSelector || {}).length === 0 && !(p.spec.ingress || []).length);
  if (!deny || !deny.spec.policyTypes.includes('Ingress')) problems.push('no default-deny ingress policy');
  // which components each policy opens to which peers
  const selects = (pol, name) => {
    const sel = pol.spec.podSelector || {};
    if (sel.matchLabels?.['app.kubernetes.io/name']) return sel.matchLabels['app.kubernetes.io/name'] === name;
    const ex = (sel.matchExpressions || []).find((e) => e.key === 'app.kubernetes.io/name');
    return ex ? ex.operator === 'In' && ex.values.includes(name) : Object.keys(sel).length === 0;
  };
  const fromNs = (pol) =>
    (pol.spec.ingress || []).flatMap((r) => (r.from || []).map((f) => f.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name']));
  const ingressCtl = pols.filter((p) => fromNs(p).includes('ingress-nginx'));
  for (const d of DAEMONS) {
    const open = ingressCtl.some((p) => selects(p, d));
    const should = d !== 'job-worker';
    if (open !== should) problems.push(`NetworkPolicy: ${d} ${should ? 'not ' : ''}reachable from the ingress controller`);
  }
  for (const p of pols) {
    for (const r of p.spec.ingress || [])
      for (const f of r.from || [])
        if (!f.namespaceSelector && !f.podSelector && !f.ipBlock) problems.push(`NetworkPolicy ${p.metadata.name}: a rule from anywhere`);
    for (const r of p.spec.ingress || []) if (!r.from) problems.push(`NetworkPolicy ${p.metadata.name}: a rule without from (everyone)`);
  }
  for (const [store, label] of [
    ['postgres', 'creator-automation/db-client'],
    ['redis', 'creator-automation/redis-client'],
  ]) {
    if (!objects.some((o) => o.kind === 'StatefulSet' && o.metadata.name === store)) continue;
    const ps = pols.filter((p) => selects(p, store));
    const peers = ps.flatMap((p) => (p.spec.ingress || []).flatMap((r) => r.from || []));
    if (!peers.length || peers.some((f) => f.namespaceSelector || f.ipBlock || f.podSelector?.matchLabels?.[label] !== 'true'))
      problems.push(`NetworkPolicy: ${store} is reachable from more than the pods labelled ${label}`);
  }
  return problems;
}

// Autoscaling: the worker on its queue depth (min 1), the gateway on CPU.
export function checkAutoscaling(objects, overlay) {
  const problems = [];
  const hpa = objects.find((o) => o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === 'api-gateway');
  if (!hpa || !(hpa.spec.metrics || []).some((m) => m.resource?.name === 'cpu')) problems.push('no CPU HPA for api-gateway');
  const so = objects.find((o) => o.kind === 'ScaledObject');
  if (overlay === 'production' || so) {
    if (!so || so.spec.scaleTargetRef.name !== 'job-worker') problems.push('no ScaledObject for job-worker');
    else {
      if (so.spec.minReplicaCount !== 1) problems.push(`ScaledObject: minReplicaCount ${so.spec.minReplicaCount}, not 1`);
      const t = so.spec.triggers.find((x) => x.type === 'prometheus');
      if (!t || !/ca_worker_queue_depth\{[^}]*queue="ready"/.test(t.metadata.query))
        problems.push('ScaledObject: not on ca_worker_queue_depth{queue="ready"}');
    }
  }
  return problems;
}

// Metric names in the alert rules and the scaler's query: registered by the daemons, or one
// of Prometheus's/kube-state-metrics' own.
export const EXTERNAL_METRICS = new Set([
  'up',
  'kube_pod_status_ready',
  'kube_pod_status_phase',
  'kube_cronjob_status_last_successful_time',
  'kube_cronjob_created',
]);
export function checkMetricNames(objects) {
  const problems = [];
  const real = registeredMetrics();
  const known = (n) => real.has(n) || EXTERNAL_METRICS.has(n) || [...real].some((r) => n === `${r}_bucket` || n === `${r}_sum` || n === `${r}_count`);
  const exprs = [];
  for (const o of objects) {
    if (o.kind === 'PrometheusRule')
      for (const g of o.spec.groups) for (const r of g.rules) exprs.push([`${o.metadata.name}/${r.alert || r.record}`, String(r.expr)]);
    if (o.kind === 'ScaledObject')
      for (const t of o.spec.triggers) if (t.type === 'prometheus') exprs.push([`ScaledObject/${o.metadata.name}`, t.metadata.query]);
  }
  for (const [w, e] of exprs) for (const n of metricNames(e)) if (!known(n)) problems.push(`${w}: metric ${n} is exported by nothing`);
  const rules = objects.find((o) => o.kind === 'PrometheusRule');
  if (rules) {
    const all = exprs.map(([, e]) => e).join('\n');
    for (const m of [
      'ca_worker_queue_depth',
      'ca_worker_jobs_total',
      'ca_billing_webhook_signature_failures_total',
      'ca_poller_polls_total',
      'kube_pod_status_ready',
      'kube_cronjob_status_last_successful_time',
    ])
      if (!all.includes(m)) problems.push(`no alert on ${m}`);
  }
  return problems;
}
