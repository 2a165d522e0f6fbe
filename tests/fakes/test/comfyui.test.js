'use strict';
// Tests of the ComfyUI fake: HTTP API, websocket events, validation errors,
// the stand-in executor, failures, interrupts and latency.
const test = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const crypto = require('node:crypto');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { createComfyFake } = require('../comfyui');
const png = require('../lib/png');

// --- a tiny websocket client (RFC 6455, masked client frames) ------------------
function wsConnect(port, clientId) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const key = crypto.randomBytes(16).toString('base64');
    const messages = [];
    const waiters = [];
    let buf = Buffer.alloc(0);
    let upgraded = false;
    const check = () => {
      for (const w of [...waiters]) {
        const m = messages.find(w.pred);
        if (m) { waiters.splice(waiters.indexOf(w), 1); clearTimeout(w.timer); w.resolve(m); }
      }
    };
    sock.on('connect', () => {
      sock.write(`GET /ws?clientId=${clientId} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.toString('latin1', 0, end);
        const want = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        if (!/^HTTP\/1\.1 101/.test(head) || !head.includes(`Sec-WebSocket-Accept: ${want}`)) { reject(new Error(`bad handshake: ${head}`)); return; }
        upgraded = true;
        buf = buf.subarray(end + 4);
        resolve(client);
      }
      while (buf.length >= 2) {
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f; let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; } else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (op === 1) messages.push(JSON.parse(payload.toString('utf8')));
        if (op === 8) client.closedByServer = true;
      }
      check();
    });
    sock.on('error', reject);
    sock.on('close', () => { client.closed = true; });
    const client = {
      messages, closed: false,
      waitFor(pred, ms) {
        return new Promise((res, rej) => {
          const w = { pred, resolve: res, timer: setTimeout(() => rej(new Error(`timeout; got ${JSON.stringify(messages.map((m) => m.type))}`)), ms || 5000) };
          waiters.push(w);
          check();
        });
      },
      close() {
        const mask = crypto.randomBytes(4);
        const payload = Buffer.from([0x03, 0xe8]);
        for (let i = 0; i < 2; i++) payload[i] ^= mask[i % 4];
        sock.write(Buffer.concat([Buffer.from([0x88, 0x82]), mask, payload]));
        sock.end();
      },
    };
  });
}

let fake; let port; let base;
test.before(async () => {
  fake = createComfyFake();
  port = await fake.listen(0);
  base = `http://127.0.0.1:${port}`;
});
test.after(async () => { await fake.close(); });
test.beforeEach(async () => { await fetch(`${base}/__admin/reset`, { method: 'POST' }); });

const INPUT = new Uint8Array([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 128, 128, 128, 0, 0, 0]); // 3x2 RGB
async function upload(name, bytes, extra) {
  const fd = new FormData();
  fd.append('image', new Blob([bytes]), name);
  for (const [k, v] of Object.entries(extra || {})) fd.append(k, v);
  const r = await fetch(`${base}/upload/image`, { method: 'POST', body: fd });
  return { status: r.status, body: r.status === 200 ? await r.json() : null };
}
async function postPrompt(prompt, extra) {
  const r = await fetch(`${base}/prompt`, { method: 'POST', body: JSON.stringify({ prompt, ...(extra || {}) }) });
  return { status: r.status, body: await r.json() };
}
async function getJson(p) { return (await fetch(`${base}${p}`)).json(); }
const admin = (p, body, method) => fetch(`${base}/__admin${p}`, { method: method || 'POST', body: body ? JSON.stringify(body) : undefined }).then((r) => r.json());

const INVERT_GRAPH = {
  1: { class_type: 'LoadImage', inputs: { image: 'in.png' } },
  2: { class_type: 'ImageInvert', inputs: { image: ['1', 0] } },
  3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'job42/out' } },
};

// The documented stand-in for ImageInvert: float32 1 - v/255, then SaveImage's
// truncating 8-bit conversion.
function expectedInvert(v) {
  const f = Math.fround;
  return Math.trunc(f(255 * f(1 - f(v / 255))));
}

test('round trip: upload, prompt, websocket events in order, history, view', async () => {
  const up = await upload('in.png', png.encodePng(3, 2, INPUT), { overwrite: 'true' });
  assert.deepEqual(up.body, { name: 'in.png', subfolder: '', type: 'input' });
  const ws = await wsConnect(port, 'client-1');
  const first = await ws.waitFor((m) => m.type === 'status');
  assert.equal(first.data.sid, 'client-1');
  const pr = await postPrompt(INVERT_GRAPH, { client_id: 'client-1', extra_data: { extra_pnginfo: { workflow: { nodes: [] } } } });
  assert.equal(pr.status, 200);
  assert.deepEqual(pr.body.node_errors, {});
  assert.equal(typeof pr.body.number, 'number');
  const id = pr.body.prompt_id;
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === id);
  const seq = ws.messages.filter((m) => m.type !== 'status').map((m) => (m.type === 'executing' || m.type === 'executed' ? `${m.type}:${m.data.node}` : m.type));
  assert.deepEqual(seq, ['execution_start', 'execution_cached', 'executing:1', 'executing:2', 'executing:3', 'executed:3', 'execution_success', 'executing:null']);
  for (const m of ws.messages.filter((x) => x.type !== 'status')) assert.equal(m.data.prompt_id, id);
  const executed = ws.messages.find((m) => m.type === 'executed');
  assert.deepEqual(executed.data.output, { images: [{ filename: 'out_00001_.png', subfolder: 'job42', type: 'output' }] });
  const h = (await getJson(`/history/${id}`))[id];
  assert.equal(h.status.status_str, 'success');
  assert.equal(h.status.completed, true);
  assert.deepEqual(h.status.messages.map((m) => m[0]), ['execution_start', 'execution_cached', 'execution_success']);
  assert.deepEqual(h.outputs['3'].images[0], { filename: 'out_00001_.png', subfolder: 'job42', type: 'output' });
  assert.equal(h.prompt[1], id);
  assert.deepEqual(h.prompt[4], ['3']);
  assert.equal(h.prompt[3].client_id, 'client-1');
  const v = await fetch(`${base}/view?filename=out_00001_.png&subfolder=job42&type=output`);
  assert.equal(v.status, 200);
  assert.equal(v.headers.get('content-type'), 'image/png');
  assert.equal(v.headers.get('content-disposition'), 'filename="out_00001_.png"');
  const out = png.decodePng(Buffer.from(await v.arrayBuffer()));
  assert.equal(out.width, 3);
  assert.equal(out.height, 2);
  assert.deepEqual([...out.rgb], [...INPUT].map(expectedInvert));
  assert.deepEqual([...out.rgb].slice(0, 3), [0, 255, 255]);
  const texts = png.readPngText(Buffer.from(await (await fetch(`${base}/view?filename=out_00001_.png&subfolder=job42`)).arrayBuffer()));
  assert.deepEqual(JSON.parse(texts.prompt), INVERT_GRAPH);
  assert.deepEqual(JSON.parse(texts.workflow), { nodes: [] });
  // A second run counts up, and max_items limits history.
  const pr2 = await postPrompt(INVERT_GRAPH, { client_id: 'client-1' });
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === pr2.body.prompt_id);
  const h2 = await getJson(`/history/${pr2.body.prompt_id}`);
  assert.equal(h2[pr2.body.prompt_id].outputs['3'].images[0].filename, 'out_00002_.png');
  assert.deepEqual(Object.keys(await getJson('/history?max_items=1')), [pr2.body.prompt_id]);
  assert.equal(Object.keys(await getJson('/history')).length, 2);
  ws.close();
});

test('uploads: name collisions, subfolders, view errors', async () => {
  const a = png.encodePng(1, 1, new Uint8Array([1, 2, 3]));
  const b = png.encodePng(1, 1, new Uint8Array([4, 5, 6]));
  assert.equal((await upload('x.png', a)).body.name, 'x.png');
  assert.equal((await upload('x.png', a)).body.name, 'x.png'); // same content reuses the name
  assert.equal((await upload('x.png', b)).body.name, 'x (1).png');
  assert.equal((await upload('x.png', b, { overwrite: '1' })).body.name, 'x.png');
  assert.deepEqual((await upload('y.png', a, { subfolder: 'jobs/7', type: 'input' })).body, { name: 'y.png', subfolder: 'jobs/7', type: 'input' });
  assert.equal((await fetch(`${base}/view?filename=y.png&subfolder=jobs/7&type=input`)).status, 200);
  assert.equal((await fetch(`${base}/view?filename=../x.png&type=input`)).status, 400);
  assert.equal((await fetch(`${base}/view?filename=x.png&subfolder=../..&type=input`)).status, 403);
  assert.equal((await fetch(`${base}/view?filename=nope.png&type=input`)).status, 404);
  const noFile = await fetch(`${base}/upload/image`, { method: 'POST', body: new FormData() });
  assert.equal(noFile.status, 400);
  // LoadImage refers to subfolder/name
  const pr = await postPrompt({
    1: { class_type: 'LoadImage', inputs: { image: 'jobs/7/y.png' } },
    2: { class_type: 'SaveImage', inputs: { images: ['1', 0], filename_prefix: 'copy' } },
  });
  assert.equal(pr.status, 200);
});

test('annotated names read other folders; outputs can be overwritten, history deleted', async () => {
  // The hole ComfyUI leaves open for a shared server: a graph can read any
  // output by name ("<prefix>_00001_.png [output]"); files can be replaced by
  // upload (also in output/), never deleted; POST /history {delete} drops history only.
  await upload('in.png', png.encodePng(3, 2, INPUT), { overwrite: 'true' });
  const waitDone = async (pid) => {
    for (let i = 0; i < 500; i++) {
      if ((await getJson(`/history/${pid}`))[pid]) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.fail(`prompt ${pid} did not finish`);
  };
  const pr = await postPrompt(INVERT_GRAPH);
  const id = pr.body.prompt_id;
  await waitDone(id);
  const peek = await postPrompt({
    1: { class_type: 'LoadImageMask', inputs: { image: 'job42/out_00001_.png [output]', channel: 'red' } },
    2: { class_type: 'MaskToImage', inputs: { mask: ['1', 0] } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'peek' } },
  });
  assert.equal(peek.status, 200);
  await waitDone(peek.body.prompt_id);
  const got = png.decodePng(Buffer.from(await (await fetch(`${base}/view?filename=peek_00001_.png`)).arrayBuffer()));
  assert.equal(got.width, 3);
  assert.equal(got.rgb[0], expectedInvert(255)); // the red channel of the other output
  const bad = await postPrompt({
    1: { class_type: 'LoadImageMask', inputs: { image: 'nope.png [output]', channel: 'red' } },
    2: { class_type: 'MaskToImage', inputs: { mask: ['1', 0] } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0] } },
  });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.node_errors['1'].errors[0].type, 'custom_validation_failed');
  // overwrite the output with a placeholder under the same name
  const tiny = png.encodePng(1, 1, new Uint8Array([0, 0, 0]));
  const ow = await upload('out_00001_.png', tiny, { type: 'output', subfolder: 'job42', overwrite: 'true' });
  assert.deepEqual(ow.body, { name: 'out_00001_.png', subfolder: 'job42', type: 'output' });
  const v = await fetch(`${base}/view?filename=out_00001_.png&subfolder=job42&type=output`);
  assert.deepEqual(Buffer.from(await v.arrayBuffer()), tiny);
  // history delete: the entry goes, the files stay
  const del = await fetch(`${base}/history`, { method: 'POST', body: JSON.stringify({ delete: [id] }) });
  assert.equal(del.status, 200);
  assert.deepEqual(await getJson(`/history/${id}`), {});
  const files = await admin('/files', null, 'GET');
  assert.ok(files.output.some((f) => f.subfolder === 'job42' && f.name === 'out_00001_.png'));
});

test('validation errors have ComfyUI shapes', async () => {
  let r = await postPrompt({ 1: { class_type: 'NoSuchNode', inputs: {} }, 2: { class_type: 'SaveImage', inputs: {} } });
  assert.equal(r.status, 400);
  assert.deepEqual(r.body, {
    error: { type: 'invalid_prompt', message: 'Cannot execute because node NoSuchNode does not exist.', details: "Node ID '#1'", extra_info: {} },
    node_errors: {},
  });
  r = await postPrompt({ 1: { inputs: {} } });
  assert.equal(r.body.error.type, 'invalid_prompt');
  assert.match(r.body.error.message, /missing the class_type property/);
  r = await postPrompt({ 1: { class_type: 'EmptyImage', inputs: { width: 8, height: 8, batch_size: 1, color: 0 } } });
  assert.deepEqual(r.body.error, { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} });
  r = await postPrompt({
    1: { class_type: 'EmptyImage', inputs: { width: 0, height: 'abc', batch_size: 1 } },
    2: { class_type: 'ImageScaleBy', inputs: { image: ['1', 0], upscale_method: 'magic', scale_by: 1 } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 'x' } },
  });
  assert.equal(r.status, 400);
  assert.equal(r.body.error.type, 'prompt_outputs_failed_validation');
  assert.equal(r.body.error.message, 'Prompt outputs failed validation');
  const e1 = r.body.node_errors['1'];
  assert.equal(e1.class_type, 'EmptyImage');
  assert.deepEqual(e1.dependent_outputs, ['3']);
  assert.deepEqual(e1.errors.map((e) => e.type), ['value_smaller_than_min', 'invalid_input_type', 'required_input_missing']);
  assert.equal(e1.errors[0].message, 'Value 0 smaller than min of 1');
  assert.equal(e1.errors[0].details, 'width');
  assert.equal(e1.errors[1].details, "height, abc, invalid literal for int() with base 10: 'abc'");
  assert.deepEqual(e1.errors[2], { type: 'required_input_missing', message: 'Required input is missing', details: 'color', extra_info: { input_name: 'color' } });
  assert.equal(r.body.node_errors['2'].errors[0].type, 'value_not_in_list');
  assert.equal(r.body.node_errors['2'].errors[0].details, "upscale_method: 'magic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']");
  assert.equal(r.body.node_errors['3'], undefined); // downstream nodes carry no errors of their own
  // LoadImage of a missing file, a link to a missing node, a type mismatch
  r = await postPrompt({
    1: { class_type: 'LoadImage', inputs: { image: 'missing.png' } },
    2: { class_type: 'SaveImage', inputs: { images: ['1', 0], filename_prefix: 'a' } },
    3: { class_type: 'SaveImage', inputs: { images: ['99', 0], filename_prefix: 'b' } },
    4: { class_type: 'SaveImage', inputs: { images: ['1', 1], filename_prefix: 'c' } },
  });
  assert.equal(r.status, 400);
  assert.deepEqual(r.body.node_errors['1'].errors[0], { type: 'custom_validation_failed', message: 'Custom validation failed for node', details: 'image - Invalid image file: missing.png', extra_info: { input_name: 'image', input_config: null, received_value: 'missing.png' } });
  assert.equal(r.body.node_errors['3'].errors[0].type, 'exception_during_validation');
  assert.equal(r.body.node_errors['3'].errors[0].details, "'99'");
  assert.equal(r.body.node_errors['4'].errors[0].type, 'return_type_mismatch');
  assert.equal(r.body.node_errors['4'].errors[0].details, 'images, received_type(MASK) mismatch input_type(IMAGE)');
  assert.deepEqual(r.body.error.details.split('\n'), [
    "Exception when validating node: '99'",
    'Return type mismatch between linked nodes: images, received_type(MASK) mismatch input_type(IMAGE)',
  ]);
  // One good output is enough for a 200; the bad one shows in node_errors.
  r = await postPrompt({
    1: { class_type: 'EmptyImage', inputs: { width: 4, height: 4, batch_size: 1, color: 0 } },
    2: { class_type: 'SaveImage', inputs: { images: ['1', 0], filename_prefix: 'ok' } },
    3: { class_type: 'SaveImage', inputs: { images: ['1', 0] } },
  });
  assert.equal(r.status, 200);
  assert.deepEqual(Object.keys(r.body.node_errors), ['3']);
  r = await fetch(`${base}/prompt`, { method: 'POST', body: '{}' });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.type, 'no_prompt');
});

test('model graph validates and runs; progress events; geometry nodes', async () => {
  const ws = await wsConnect(port, 'c-model');
  const graph = {
    4: { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'fake_sd15.safetensors' } },
    5: { class_type: 'EmptyLatentImage', inputs: { width: 64, height: 32, batch_size: 2 } },
    6: { class_type: 'CLIPTextEncode', inputs: { text: 'a cat', clip: ['4', 1] } },
    7: { class_type: 'CLIPTextEncode', inputs: { text: '', clip: ['4', 1] } },
    3: { class_type: 'KSampler', inputs: { seed: 7, steps: 5, cfg: 7.5, sampler_name: 'euler', scheduler: 'normal', denoise: 1, model: ['4', 0], positive: ['6', 0], negative: ['7', 0], latent_image: ['5', 0] } },
    8: { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } },
    10: { class_type: 'ImageRotate', inputs: { image: ['8', 0], rotation: '90 degrees' } },
    9: { class_type: 'SaveImage', inputs: { images: ['10', 0], filename_prefix: 'gen' } },
  };
  const pr = await postPrompt(graph, { client_id: 'c-model' });
  assert.equal(pr.status, 200, JSON.stringify(pr.body));
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null);
  const progress = ws.messages.filter((m) => m.type === 'progress');
  assert.deepEqual(progress.map((m) => [m.data.value, m.data.max, m.data.node]), [[1, 5, '3'], [2, 5, '3'], [3, 5, '3'], [4, 5, '3'], [5, 5, '3']]);
  const h = (await getJson(`/history/${pr.body.prompt_id}`))[pr.body.prompt_id];
  assert.deepEqual(h.outputs['9'].images.map((i) => i.filename), ['gen_00001_.png', 'gen_00002_.png']);
  const img = png.decodePng(Buffer.from(await (await fetch(`${base}/view?filename=gen_00001_.png`)).arrayBuffer()));
  assert.equal(img.width, 32); // rotated 64x32
  assert.equal(img.height, 64);
  const c = Number((7n * 2654435761n) % 16777216n); // documented VAEDecode colour
  const expect = [(c >> 16) & 255, (c >> 8) & 255, c & 255].map((v) => Math.trunc(Math.fround(255 * Math.fround(v / 255))));
  assert.deepEqual([...img.rgb.slice(0, 3)], expect);
  // Scale and crop sizes follow ComfyUI's formulas.
  await upload('in.png', png.encodePng(3, 2, INPUT));
  const g2 = {
    1: { class_type: 'LoadImage', inputs: { image: 'in.png' } },
    2: { class_type: 'ImageScaleBy', inputs: { image: ['1', 0], upscale_method: 'bicubic', scale_by: 2.5 } },
    3: { class_type: 'SaveImage', inputs: { images: ['2', 0], filename_prefix: 's' } },
    4: { class_type: 'ImageCrop', inputs: { image: ['1', 0], width: 10, height: 1, x: 1, y: 1 } },
    5: { class_type: 'SaveImage', inputs: { images: ['4', 0], filename_prefix: 'c' } },
  };
  const pr2 = await postPrompt(g2, { client_id: 'c-model' });
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === pr2.body.prompt_id);
  const scaled = png.decodePng(Buffer.from(await (await fetch(`${base}/view?filename=s_00001_.png`)).arrayBuffer()));
  assert.deepEqual([scaled.width, scaled.height], [8, 5]); // round(7.5)=8 (half to even), round(5)=5
  const cropped = png.decodePng(Buffer.from(await (await fetch(`${base}/view?filename=c_00001_.png`)).arrayBuffer()));
  assert.deepEqual([cropped.width, cropped.height, ...cropped.rgb], [2, 1, 128, 128, 128, 0, 0, 0]);
  ws.close();
});

test('a failing node: execution_error on the websocket and an error in history', async () => {
  await upload('in.png', png.encodePng(3, 2, INPUT));
  await admin('/fail_node', { node_id: '2', exception_type: 'torch.OutOfMemoryError', exception_message: 'CUDA out of memory (injected)', count: 1 });
  const ws = await wsConnect(port, 'c-fail');
  const pr = await postPrompt(INVERT_GRAPH, { client_id: 'c-fail' });
  const err = await ws.waitFor((m) => m.type === 'execution_error');
  assert.equal(err.data.prompt_id, pr.body.prompt_id);
  assert.equal(err.data.node_id, '2');
  assert.equal(err.data.node_type, 'ImageInvert');
  assert.equal(err.data.exception_type, 'torch.OutOfMemoryError');
  assert.equal(err.data.exception_message, 'CUDA out of memory (injected)');
  assert.deepEqual(err.data.executed, ['1']);
  assert.ok(Array.isArray(err.data.traceback));
  assert.ok(err.data.current_inputs.image);
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null);
  assert.equal(ws.messages.some((m) => m.type === 'execution_success'), false);
  const h = (await getJson(`/history/${pr.body.prompt_id}`))[pr.body.prompt_id];
  assert.equal(h.status.status_str, 'error');
  assert.equal(h.status.completed, false);
  assert.deepEqual(h.status.messages.map((m) => m[0]), ['execution_start', 'execution_cached', 'execution_error']);
  assert.deepEqual(h.outputs, {});
  // count:1 used it up: the next run succeeds.
  const pr2 = await postPrompt(INVERT_GRAPH, { client_id: 'c-fail' });
  await ws.waitFor((m) => m.type === 'execution_success' && m.data.prompt_id === pr2.body.prompt_id);
  ws.close();
});

test('interrupt stops the running prompt; latency and the queue', async () => {
  await upload('in.png', png.encodePng(3, 2, INPUT));
  await admin('/latency', { ms: 150 });
  const ws = await wsConnect(port, 'c-lat');
  let t0 = Date.now();
  const pr = await postPrompt(INVERT_GRAPH, { client_id: 'c-lat' });
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === pr.body.prompt_id);
  assert.ok(Date.now() - t0 >= 3 * 150 - 20, `took ${Date.now() - t0} ms`);
  await admin('/latency', { ms: 3000 });
  t0 = Date.now();
  const a = await postPrompt(INVERT_GRAPH, { client_id: 'c-lat' });
  const b = await postPrompt(INVERT_GRAPH, { client_id: 'c-lat' });
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === '1' && m.data.prompt_id === a.body.prompt_id);
  const q = await getJson('/queue');
  assert.deepEqual(q.queue_running.map((e) => e[1]), [a.body.prompt_id]);
  assert.deepEqual(q.queue_pending.map((e) => e[1]), [b.body.prompt_id]);
  assert.deepEqual(await getJson('/prompt'), { exec_info: { queue_remaining: 2 } });
  assert.deepEqual(await getJson(`/history/${a.body.prompt_id}`), {});
  // Remove the pending one, interrupt the running one.
  await fetch(`${base}/queue`, { method: 'POST', body: JSON.stringify({ delete: [b.body.prompt_id] }) });
  const ir = await fetch(`${base}/interrupt`, { method: 'POST' });
  assert.equal(ir.status, 200);
  const intr = await ws.waitFor((m) => m.type === 'execution_interrupted');
  assert.equal(intr.data.prompt_id, a.body.prompt_id);
  assert.equal(intr.data.node_id, '1');
  await ws.waitFor((m) => m.type === 'executing' && m.data.node === null && m.data.prompt_id === a.body.prompt_id);
  assert.ok(Date.now() - t0 < 2500, `interrupt took ${Date.now() - t0} ms`);
  const h = (await getJson(`/history/${a.body.prompt_id}`))[a.body.prompt_id];
  assert.equal(h.status.status_str, 'error');
  assert.deepEqual(h.status.messages.map((m) => m[0]), ['execution_start', 'execution_cached', 'execution_interrupted']);
  assert.deepEqual(await getJson(`/history/${b.body.prompt_id}`), {});
  const status = ws.messages.filter((m) => m.type === 'status').at(-1);
  assert.equal(status.data.status.exec_info.queue_remaining, 0);
  ws.close();
});

test('events without client_id are not sent; other routes; HTTP faults; ws drop', async () => {
  await upload('in.png', png.encodePng(3, 2, INPUT));
  const ws = await wsConnect(port, 'watcher');
  const pr = await postPrompt(INVERT_GRAPH);
  for (let i = 0; i < 100 && !(await getJson(`/history/${pr.body.prompt_id}`))[pr.body.prompt_id]; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual([...new Set(ws.messages.map((m) => m.type))], ['status']);
  const stats = await getJson('/api/system_stats');
  assert.ok(stats.system.comfyui_version);
  assert.equal(stats.devices[0].type, 'cpu');
  const info = await getJson('/object_info/ImageSharpen');
  assert.deepEqual(info.ImageSharpen.input.required.alpha, ['FLOAT', { default: 1, min: 0, max: 5, step: 0.01 }]);
  assert.equal(info.ImageSharpen.category, 'image/postprocessing');
  const all = await getJson('/object_info');
  for (const n of ['LoadImage', 'SaveImage', 'PreviewImage', 'ImageScale', 'ImageBlur', 'ImageBlend', 'ImageQuantize', 'ImagePadForOutpaint', 'KSampler', 'VAEDecode']) assert.ok(all[n], n);
  assert.deepEqual(all.LoadImage.input.required.image[0], ['in.png']);
  // Shared faults from lib/common.js
  await admin('/faults', { match: { method: 'POST', path: '/prompt' }, action: 'status', status: 503, count: 1 });
  const f = await postPrompt(INVERT_GRAPH);
  assert.equal(f.status, 503);
  assert.equal((await postPrompt(INVERT_GRAPH)).status, 200);
  const dropped = await admin('/ws/drop');
  assert.equal(dropped.dropped, 1);
  for (let i = 0; i < 50 && !ws.closed; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(ws.closed, true);
});

test('tests/fakes/run comfyui --port 0 prints its port and serves', async () => {
  const child = spawn(path.join(__dirname, '..', 'run'), ['comfyui', '--port', '0', '--latency-ms', '5'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const p = await new Promise((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => { out += d; const m = /listening on 127\.0\.0\.1:(\d+)/.exec(out); if (m) resolve(Number(m[1])); });
      child.on('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const r = await fetch(`http://127.0.0.1:${p}/system_stats`);
    assert.equal(r.status, 200);
  } finally { child.kill('SIGTERM'); }
});
