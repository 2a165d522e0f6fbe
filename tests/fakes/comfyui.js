#!/usr/bin/env node
'use strict';
/*
 * Fake ComfyUI server: HTTP API + websocket, validation like execution.py,
 * and a deterministic stand-in executor. See docs/fakes.md (ComfyUI).
 *
 *   node tests/fakes/comfyui.js --port P [--latency-ms N] [--verbose]
 *
 * Routes (also under /api/...): POST /prompt, GET /prompt, POST /upload/image,
 * GET /view, GET /history, GET /history/:id, POST /history, GET /queue,
 * POST /queue, POST /interrupt, POST /free, GET /system_stats,
 * GET /object_info, GET /object_info/:class, GET /ws?clientId=...
 * Admin (besides lib/common.js's): POST /__admin/latency {ms},
 * POST /__admin/fail_node {node_id?|class_type?, exception_type?,
 * exception_message?, count?}, DELETE /__admin/fail_node, GET /__admin/files,
 * POST /__admin/ws/drop, GET /__admin/ws.
 */
const crypto = require('node:crypto');
const path = require('node:path');
const common = require('./lib/common');
const { HttpError, readBody, sendJson } = common;
const png = require('./lib/png');

const MAX_RESOLUTION = 16384;
const UPSCALE_METHODS = ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos'];
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const f32 = Math.fround;

// ---------------------------------------------------------------- python-ish helpers

function pyRepr(v) {
  if (typeof v === 'string') return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  if (Array.isArray(v)) return `[${v.map(pyRepr).join(', ')}]`;
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  return String(v);
}
function pyStr(v) { return typeof v === 'string' ? v : pyRepr(v); }
function pyFloatStr(v) {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : (v > 0 ? 'inf' : '-inf');
  return Number.isInteger(v) ? `${v}.0` : String(v);
}
function pyRound(x) {
  const r = Math.round(x);
  if (Math.abs(x - Math.trunc(x)) === 0.5) return 2 * Math.round(x / 2);
  return r;
}
class PyError extends Error {
  constructor(type, message) { super(message); this.pyType = type; }
}
function pyInt(v) {
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new PyError(Number.isNaN(v) ? 'ValueError' : 'OverflowError', Number.isNaN(v) ? 'cannot convert float NaN to integer' : 'cannot convert float infinity to integer');
    return Math.trunc(v);
  }
  if (typeof v === 'string' && /^\s*[+-]?\d+(_\d+)*\s*$/.test(v)) return Number(v.replace(/_/g, ''));
  if (typeof v === 'string') throw new PyError('ValueError', `invalid literal for int() with base 10: ${pyRepr(v)}`);
  throw new PyError('TypeError', `int() argument must be a string, a bytes-like object or a real number, not '${v === null ? 'NoneType' : Array.isArray(v) ? 'list' : 'dict'}'`);
}
function pyFloat(v) {
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (/^[+-]?(\d+(_\d+)*\.?\d*([e][+-]?\d+)?|\.\d+([e][+-]?\d+)?)$/.test(s)) return Number(s.replace(/_/g, ''));
    if (/^[+-]?(inf|infinity)$/.test(s)) return s.startsWith('-') ? -Infinity : Infinity;
    if (/^[+-]?nan$/.test(s)) return NaN;
    throw new PyError('ValueError', `could not convert string to float: ${pyRepr(v)}`);
  }
  throw new PyError('TypeError', `float() argument must be a string or a real number, not '${v === null ? 'NoneType' : Array.isArray(v) ? 'list' : 'dict'}'`);
}
function pyBool(v) {
  if (typeof v === 'string') return v.length > 0;
  if (Array.isArray(v)) return v.length > 0;
  if (v && typeof v === 'object') return Object.keys(v).length > 0;
  return !!v;
}

// ---------------------------------------------------------------- node classes

const INT = (def, min, max, step) => ['INT', { default: def, min, max, step: step || 1 }];
const FLOAT = (def, min, max, step) => ['FLOAT', { default: def, min, max, step: step || 0.01, _float: true }];
const STRING = (def, multiline) => ['STRING', { default: def, multiline: !!multiline }];
const COMBO = (list, extra) => [list, { ...(extra || {}) }];

function imageNode(category, required, returns, run, extra) {
  return { category, required, optional: {}, returns, run, ...(extra || {}) };
}

/*
 * Each class: required/optional input specs, returns (RETURN_TYPES),
 * output (OUTPUT_NODE), run(inputs, ctx) -> array of outputs (+ ui),
 * validate(inputs) (VALIDATE_INPUTS; returns true or an error string).
 */
function makeNodeClasses(fs) {
  const img = ['IMAGE'];
  const N = {};
  N.LoadImage = {
    category: 'image', returns: ['IMAGE', 'MASK'],
    required: { image: () => COMBO(fs.list('input'), { image_upload: true }) },
    validate: (inp) => (fs.resolveAnnotated(inp.image, 'input') ? true : `Invalid image file: ${inp.image}`),
    run: (inp) => {
      const f = fs.resolveAnnotated(inp.image, 'input');
      if (!f) throw new PyError('FileNotFoundError', `[Errno 2] No such file or directory: '${inp.image}'`);
      return [[frameFromBytes(f.buf, f.name)], { mask: true }];
    },
  };
  // LoadImageMask: one channel of a file as a MASK (nodes.py). Like LoadImage it
  // takes annotated names ("x.png [output]"): the way a graph reads another
  // prompt's output. A mask frame is kept as a grey 3-channel frame here.
  N.LoadImageMask = {
    category: 'mask', returns: ['MASK'],
    required: { image: () => COMBO(fs.list('input'), { image_upload: true }), channel: COMBO(['alpha', 'red', 'green', 'blue']) },
    validate: (inp) => (fs.resolveAnnotated(inp.image, 'input') ? true : `Invalid image file: ${inp.image}`),
    run: (inp) => {
      const f = fs.resolveAnnotated(inp.image, 'input');
      if (!f) throw new PyError('FileNotFoundError', `[Errno 2] No such file or directory: '${inp.image}'`);
      const fr = frameFromBytes(f.buf, f.name);
      if (fr.opaque) return [[fr]];
      const c = { red: 0, green: 1, blue: 2 }[inp.channel];
      // alpha of an image without one: 1 - 1 = 0 everywhere (ComfyUI converts to RGBA)
      return [mapFrames([fr], (x) => sample(x, x.w, x.h, (xx, yy) => [xx, yy]))
        .map((x) => ({ ...x, px: x.px.map((v, i) => (c === undefined ? 0 : x.px[i - (i % 3) + c])) }))];
    },
  };
  N.MaskToImage = {
    category: 'mask', returns: ['IMAGE'],
    required: { mask: ['MASK'] },
    run: (inp) => [inp.mask],
  };
  N.SaveImage = {
    category: 'image', returns: [], output: true,
    required: { images: img, filename_prefix: STRING('ComfyUI') },
    run: (inp, ctx) => ctx.save(inp.images, inp.filename_prefix, 'output'),
  };
  N.PreviewImage = {
    category: 'image', returns: [], output: true,
    required: { images: img },
    run: (inp, ctx) => {
      const letters = 'abcdefghijklmnopqrstupvxyz';
      let suffix = '';
      for (let i = 0; i < 5; i++) suffix += letters[crypto.randomInt(letters.length)];
      return ctx.save(inp.images, `ComfyUI_temp_${suffix}`, 'temp');
    },
  };
  N.EmptyImage = imageNode('image', {
    width: INT(512, 1, MAX_RESOLUTION), height: INT(512, 1, MAX_RESOLUTION),
    batch_size: INT(1, 1, 4096), color: INT(0, 0, 0xffffff),
  }, ['IMAGE'], (inp) => {
    const c = inp.color;
    const rgb = [(c >> 16) & 255, (c >> 8) & 255, c & 255].map((v) => f32(v / 255));
    const frames = [];
    for (let b = 0; b < inp.batch_size; b++) frames.push(solidFrame(inp.width, inp.height, rgb));
    return [frames];
  });
  const scaleInputs = { image: img, upscale_method: COMBO(UPSCALE_METHODS) };
  N.ImageScale = imageNode('image/upscaling', {
    ...scaleInputs, width: INT(512, 0, MAX_RESOLUTION), height: INT(512, 0, MAX_RESOLUTION), crop: COMBO(['disabled', 'center']),
  }, ['IMAGE'], (inp) => [mapFrames(inp.image, (f) => {
    let w = inp.width; let h = inp.height;
    if (w === 0 && h === 0) return f;
    if (w === 0) w = Math.max(1, pyRound(f.w * h / f.h));
    else if (h === 0) h = Math.max(1, pyRound(f.h * w / f.w));
    return resizeNearest(inp.crop === 'center' ? centerCrop(f, w, h) : f, w, h);
  })]);
  N.ImageScaleBy = imageNode('image/upscaling', { ...scaleInputs, scale_by: FLOAT(1.0, 0.01, 8.0) }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => resizeNearest(f, pyRound(f.w * inp.scale_by), pyRound(f.h * inp.scale_by)))]);
  N.ImageScaleToTotalPixels = imageNode('image/upscaling', { ...scaleInputs, megapixels: FLOAT(1.0, 0.01, 16.0) }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => {
      const s = Math.sqrt(Math.trunc(inp.megapixels * 1024 * 1024) / (f.w * f.h));
      return resizeNearest(f, pyRound(f.w * s), pyRound(f.h * s));
    })]);
  N.ImageScaleToMaxDimension = imageNode('image/upscaling', { ...scaleInputs, largest_size: INT(512, 0, MAX_RESOLUTION) }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => {
      const L = inp.largest_size;
      if (f.w >= f.h) return resizeNearest(f, L, pyRound(f.h / f.w * L));
      return resizeNearest(f, pyRound(f.w / f.h * L), L);
    })]);
  N.ImageInvert = imageNode('image', { image: img }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => ({ ...f, px: f.px.map((v) => f32(1 - v)) }))]);
  N.ImageBlur = imageNode('image/postprocessing', { image: img, blur_radius: INT(1, 1, 31), sigma: FLOAT(1.0, 0.1, 10.0, 0.1) }, ['IMAGE'], (inp) => [inp.image]);
  N.ImageSharpen = imageNode('image/postprocessing', {
    image: img, sharpen_radius: INT(1, 1, 31), sigma: FLOAT(1.0, 0.1, 10.0), alpha: FLOAT(1.0, 0.0, 5.0),
  }, ['IMAGE'], (inp) => [inp.image]);
  N.ImageBlend = imageNode('image/postprocessing', {
    image1: img, image2: img, blend_factor: FLOAT(0.5, 0.0, 1.0),
    blend_mode: COMBO(['normal', 'multiply', 'screen', 'overlay', 'soft_light', 'difference']),
  }, ['IMAGE'], (inp) => [inp.image1.map((a, i) => blendFrames(a, inp.image2[Math.min(i, inp.image2.length - 1)], inp.blend_factor, inp.blend_mode))]);
  N.ImageQuantize = imageNode('image/postprocessing', {
    image: img, colors: INT(256, 1, 256), dither: COMBO(['none', 'floyd-steinberg', 'bayer-2', 'bayer-4', 'bayer-8', 'bayer-16']),
  }, ['IMAGE'], (inp) => [inp.image]);
  N.ImageCrop = imageNode('image/transform', {
    image: img, width: INT(512, 1, MAX_RESOLUTION), height: INT(512, 1, MAX_RESOLUTION),
    x: INT(0, 0, MAX_RESOLUTION), y: INT(0, 0, MAX_RESOLUTION),
  }, ['IMAGE'], (inp) => [mapFrames(inp.image, (f) => {
    const x = Math.min(inp.x, f.w - 1); const y = Math.min(inp.y, f.h - 1);
    const w = Math.min(inp.width, f.w - x); const h = Math.min(inp.height, f.h - y);
    return sample(f, w, h, (xx, yy) => [x + xx, y + yy]);
  })]);
  N.ImagePadForOutpaint = imageNode('image', {
    image: img, left: INT(0, 0, MAX_RESOLUTION, 8), top: INT(0, 0, MAX_RESOLUTION, 8),
    right: INT(0, 0, MAX_RESOLUTION, 8), bottom: INT(0, 0, MAX_RESOLUTION, 8), feathering: INT(40, 0, MAX_RESOLUTION),
  }, ['IMAGE', 'MASK'], (inp) => [mapFrames(inp.image, (f) => {
    const W = f.w + inp.left + inp.right; const H = f.h + inp.top + inp.bottom;
    const out = solidFrame(W, H, [f32(0.5), f32(0.5), f32(0.5)]);
    for (let y = 0; y < f.h; y++) {
      for (let x = 0; x < f.w; x++) {
        for (let c = 0; c < 3; c++) out.px[((y + inp.top) * W + x + inp.left) * 3 + c] = f.px[(y * f.w + x) * 3 + c];
      }
    }
    return out;
  }), { mask: true }]);
  N.ImageFlip = imageNode('image/transform', { image: img, flip_method: COMBO(['x-axis: vertically', 'y-axis: horizontally']) }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => (inp.flip_method.startsWith('x')
      ? sample(f, f.w, f.h, (x, y) => [x, f.h - 1 - y])
      : sample(f, f.w, f.h, (x, y) => [f.w - 1 - x, y])))]);
  N.ImageRotate = imageNode('image/transform', { image: img, rotation: COMBO(['none', '90 degrees', '180 degrees', '270 degrees']) }, ['IMAGE'],
    (inp) => [mapFrames(inp.image, (f) => {
      switch (inp.rotation) {
        case '90 degrees': return sample(f, f.h, f.w, (x, y) => [y, f.h - 1 - x]);
        case '180 degrees': return sample(f, f.w, f.h, (x, y) => [f.w - 1 - x, f.h - 1 - y]);
        case '270 degrees': return sample(f, f.h, f.w, (x, y) => [f.w - 1 - y, x]);
        default: return f;
      }
    })]);
  // Pretend model nodes: validate like the real ones, produce deterministic stand-ins.
  N.CheckpointLoaderSimple = {
    category: 'loaders', returns: ['MODEL', 'CLIP', 'VAE'],
    required: { ckpt_name: COMBO(['fake_sd15.safetensors', 'fake_sdxl.safetensors']) },
    run: (inp) => [{ model: inp.ckpt_name }, { clip: inp.ckpt_name }, { vae: inp.ckpt_name }],
  };
  N.CLIPTextEncode = {
    category: 'conditioning', returns: ['CONDITIONING'],
    required: { text: STRING('', true), clip: ['CLIP'] },
    run: (inp) => [{ text: inp.text }],
  };
  N.EmptyLatentImage = {
    category: 'latent', returns: ['LATENT'],
    required: { width: INT(512, 16, MAX_RESOLUTION, 8), height: INT(512, 16, MAX_RESOLUTION, 8), batch_size: INT(1, 1, 4096) },
    run: (inp) => [{ w: inp.width, h: inp.height, batch: inp.batch_size, seed: 0 }],
  };
  N.KSampler = {
    category: 'sampling', returns: ['LATENT'], progress: (inp) => inp.steps,
    required: {
      model: ['MODEL'], seed: INT(0, 0, 0xffffffffffffffff), steps: INT(20, 1, 10000), cfg: FLOAT(8.0, 0.0, 100.0, 0.1),
      sampler_name: COMBO(['euler', 'euler_ancestral', 'heun', 'dpmpp_2m', 'dpmpp_2m_sde', 'ddim', 'uni_pc']),
      scheduler: COMBO(['normal', 'karras', 'exponential', 'sgm_uniform', 'simple', 'ddim_uniform', 'beta']),
      positive: ['CONDITIONING'], negative: ['CONDITIONING'], latent_image: ['LATENT'], denoise: FLOAT(1.0, 0.0, 1.0),
    },
    run: (inp) => [{ ...inp.latent_image, seed: inp.seed }],
  };
  N.VAEDecode = {
    category: 'latent', returns: ['IMAGE'],
    required: { samples: ['LATENT'], vae: ['VAE'] },
    run: (inp) => {
      const c = Number((BigInt(Math.trunc(inp.samples.seed || 0)) * 2654435761n) % 16777216n);
      const rgb = [(c >> 16) & 255, (c >> 8) & 255, c & 255].map((v) => f32(v / 255));
      const frames = [];
      for (let b = 0; b < (inp.samples.batch || 1); b++) frames.push(solidFrame(inp.samples.w, inp.samples.h, rgb));
      return [frames];
    },
  };
  N.VAEEncode = {
    category: 'latent', returns: ['LATENT'],
    required: { pixels: img, vae: ['VAE'] },
    run: (inp) => [{ w: inp.pixels[0].w || 512, h: inp.pixels[0].h || 512, batch: inp.pixels.length, seed: 0 }],
  };
  N.UpscaleModelLoader = {
    category: 'loaders', returns: ['UPSCALE_MODEL'],
    required: { model_name: COMBO(['4x-FakeUpscaler.pth', '2x-FakeUpscaler.pth']) },
    run: (inp) => [{ scale: Number((/^(\d+)x/.exec(inp.model_name) || [0, 4])[1]) }],
  };
  N.ImageUpscaleWithModel = {
    category: 'image/upscaling', returns: ['IMAGE'], progress: () => 4,
    required: { upscale_model: ['UPSCALE_MODEL'], image: img },
    run: (inp) => [mapFrames(inp.image, (f) => resizeNearest(f, f.w * inp.upscale_model.scale, f.h * inp.upscale_model.scale))],
  };
  for (const [name, c] of Object.entries(N)) {
    c.name = name;
    c.optional = c.optional || {};
  }
  return N;
}

// ---------------------------------------------------------------- image frames

// A frame is {w, h, px: Float32Array (h*w*3, values in [0,1])} or, when the
// input could not be decoded, {opaque: Buffer} which every node passes through.
function frameFromBytes(buf) {
  if (png.isPng(buf)) {
    try {
      const d = png.decodePng(buf);
      const px = new Float32Array(d.rgb.length);
      for (let i = 0; i < px.length; i++) px[i] = f32(d.rgb[i] / 255);
      return { w: d.width, h: d.height, px };
    } catch (_) { /* fall through to opaque */ }
  }
  return { opaque: buf };
}
function solidFrame(w, h, rgb) {
  const px = new Float32Array(w * h * 3);
  for (let i = 0; i < w * h; i++) { px[i * 3] = rgb[0]; px[i * 3 + 1] = rgb[1]; px[i * 3 + 2] = rgb[2]; }
  return { w, h, px };
}
function mapFrames(frames, fn) { return frames.map((f) => (f.opaque ? f : fn(f))); }
function sample(f, w, h, srcOf) {
  const px = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [sx, sy] = srcOf(x, y);
      const s = (sy * f.w + sx) * 3; const d = (y * w + x) * 3;
      px[d] = f.px[s]; px[d + 1] = f.px[s + 1]; px[d + 2] = f.px[s + 2];
    }
  }
  return { w, h, px };
}
// PyTorch nearest-exact: src = floor((dst + 0.5) * in / out), clamped.
function resizeNearest(f, w, h) {
  if (w === f.w && h === f.h) return f;
  return sample(f, w, h, (x, y) => [Math.min(Math.floor((x + 0.5) * f.w / w), f.w - 1), Math.min(Math.floor((y + 0.5) * f.h / h), f.h - 1)]);
}
function centerCrop(f, w, h) {
  const oldA = f.w / f.h; const newA = w / h;
  let x = 0; let y = 0;
  if (oldA > newA) x = pyRound((f.w - f.w * newA / oldA) / 2);
  else if (oldA < newA) y = pyRound((f.h - f.h * oldA / newA) / 2);
  return sample(f, f.w - 2 * x, f.h - 2 * y, (xx, yy) => [xx + x, yy + y]);
}
function blendFrames(a, b, fac, mode) {
  if (a.opaque || !b || b.opaque || a.w !== b.w || a.h !== b.h) return a;
  const g = (v) => (v <= 0.25 ? ((16 * v - 12) * v + 4) * v : Math.sqrt(v));
  const B = {
    normal: (x, y) => y, multiply: (x, y) => x * y, screen: (x, y) => 1 - (1 - x) * (1 - y),
    overlay: (x, y) => (x <= 0.5 ? 2 * x * y : 1 - 2 * (1 - x) * (1 - y)),
    soft_light: (x, y) => (y <= 0.5 ? x - (1 - 2 * y) * x * (1 - x) : x + (2 * y - 1) * (g(x) - x)),
    difference: (x, y) => x - y,
  }[mode];
  const px = new Float32Array(a.px.length);
  for (let i = 0; i < px.length; i++) px[i] = f32(Math.min(1, Math.max(0, a.px[i] * (1 - fac) + B(a.px[i], b.px[i]) * fac)));
  return { w: a.w, h: a.h, px };
}
// SaveImage's conversion: clip(255 * x, 0, 255).astype(uint8) (truncates).
function frameToPng(f, texts) {
  if (f.opaque) return f.opaque;
  const rgb = new Uint8Array(f.px.length);
  for (let i = 0; i < rgb.length; i++) rgb[i] = Math.trunc(Math.min(255, Math.max(0, f32(255 * f.px[i]))));
  return png.encodePng(f.w, f.h, rgb, texts);
}

// ---------------------------------------------------------------- file store

function createFileStore() {
  const dirs = { input: new Map(), output: new Map(), temp: new Map() };
  function norm(subfolder, name) { return subfolder ? `${subfolder.replace(/^\/+|\/+$/g, '')}/${name}` : name; }
  return {
    dirs,
    clear() { for (const d of Object.values(dirs)) d.clear(); },
    get(type, subfolder, name) { const d = dirs[type]; return d ? d.get(norm(subfolder, name)) : undefined; },
    put(type, subfolder, name, buf) { dirs[type].set(norm(subfolder, name), { name, subfolder: subfolder || '', buf, mtime: Date.now() }); },
    list(type) { return [...dirs[type].keys()].sort(); },
    // "sub/name.png [output]" -> file in that dir (LoadImage's annotated names)
    resolveAnnotated(value, defType) {
      if (typeof value !== 'string') return null;
      let type = defType; let v = value;
      const m = /^(.*) \[(input|output|temp)\]$/.exec(v);
      if (m) { v = m[1]; type = m[2]; }
      return dirs[type].get(v.replace(/^\/+/, '')) || null;
    },
  };
}

// ---------------------------------------------------------------- websocket (RFC 6455, by hand)

function wsFrame(opcode, payload) {
  const len = payload.length;
  let head;
  if (len < 126) { head = Buffer.alloc(2); head[1] = len; } else if (len < 65536) { head = Buffer.alloc(4); head[1] = 126; head.writeUInt16BE(len, 2); } else { head = Buffer.alloc(10); head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  head[0] = 0x80 | opcode;
  return Buffer.concat([head, payload]);
}

function acceptWebSocket(req, socket, onClose) {
  const key = req.headers['sec-websocket-key'];
  if (!key || String(req.headers.upgrade).toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return null;
  }
  const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  socket.setNoDelay(true);
  const ws = {
    socket, open: true,
    sendText(s) { if (ws.open) socket.write(wsFrame(0x1, Buffer.from(s))); },
    sendJson(o) { ws.sendText(JSON.stringify(o)); },
    close(code) {
      if (!ws.open) return;
      ws.open = false;
      const b = Buffer.alloc(2); b.writeUInt16BE(code || 1000, 0);
      socket.write(wsFrame(0x8, b));
      socket.end();
    },
  };
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 2) {
      const opcode = buf[0] & 0x0f;
      const masked = (buf[1] & 0x80) !== 0;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; } else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const maskOff = off; if (masked) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[maskOff + (i % 4)];
      buf = buf.subarray(off + len);
      if (opcode === 0x8) { ws.close(1000); } else if (opcode === 0x9) { socket.write(wsFrame(0xa, payload)); }
      // text/binary from the client are ignored, as ComfyUI does
    }
  });
  const done = () => { if (ws.open) ws.open = false; onClose(ws); };
  socket.on('close', done);
  socket.on('error', done);
  return ws;
}

// ---------------------------------------------------------------- multipart

function parseMultipart(body, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || '');
  if (!m) throw new HttpError(400, 'multipart boundary missing');
  const boundary = Buffer.from(`--${m[1] || m[2].trim()}`);
  const parts = {};
  let pos = body.indexOf(boundary);
  while (pos >= 0) {
    let start = pos + boundary.length;
    if (body[start] === 0x2d && body[start + 1] === 0x2d) break; // closing --
    if (body[start] === 0x0d) start += 2;
    const headEnd = body.indexOf('\r\n\r\n', start);
    if (headEnd < 0) break;
    const headers = body.toString('utf8', start, headEnd);
    const next = body.indexOf(boundary, headEnd + 4);
    if (next < 0) break;
    const data = body.subarray(headEnd + 4, next - 2); // strip CRLF before boundary
    const name = /name="([^"]*)"/i.exec(headers);
    const filename = /filename="([^"]*)"/i.exec(headers);
    if (name) parts[name[1]] = { data, filename: filename ? filename[1] : null };
    pos = next;
  }
  return parts;
}

// ---------------------------------------------------------------- validation (execution.py)

function isLink(v) { return Array.isArray(v); }

function inputSpec(cls, name) {
  let spec = cls.required[name];
  let category = 'required';
  if (!spec) { spec = cls.optional[name]; category = 'optional'; }
  if (!spec) return null;
  if (typeof spec === 'function') spec = spec();
  return { type: spec[0], extra: spec[1] || {}, category };
}

function typeMatches(received, expected) {
  if (Array.isArray(expected)) return received === 'COMBO' || received === '*';
  if (received === '*' || expected === '*') return true;
  const r = String(received).split(','); const e = String(expected).split(',');
  return r.some((x) => e.includes(x));
}

function validatePrompt(prompt, classes, partialTargets) {
  const outputs = [];
  for (const x of Object.keys(prompt)) {
    const node = prompt[x];
    if (!node || typeof node !== 'object' || !('class_type' in node)) {
      return { ok: false, error: { type: 'invalid_prompt', message: 'Cannot execute because a node is missing the class_type property.', details: `Node ID '#${x}'`, extra_info: {} }, nodeErrors: {} };
    }
    const cls = classes[node.class_type];
    if (!cls) {
      return { ok: false, error: { type: 'invalid_prompt', message: `Cannot execute because node ${node.class_type} does not exist.`, details: `Node ID '#${x}'`, extra_info: {} }, nodeErrors: {} };
    }
    if (cls.output && (!partialTargets || partialTargets.includes(x))) outputs.push(x);
  }
  if (outputs.length === 0) {
    return { ok: false, error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} }, nodeErrors: {} };
  }
  const validated = new Map();
  const goodOutputs = [];
  const errors = [];
  const nodeErrors = {};

  function validateInputs(id) {
    if (validated.has(id)) return validated.get(id);
    const node = prompt[id];
    const cls = classes[node.class_type];
    const inputs = node.inputs || {};
    const errs = [];
    let valid = true;
    const names = [...Object.keys(cls.required), ...Object.keys(cls.optional)];
    for (const x of names) {
      const spec = inputSpec(cls, x);
      const info = [spec.type, publicExtra(spec.extra)];
      if (!(x in inputs)) {
        if (spec.category === 'required') {
          errs.push({ type: 'required_input_missing', message: 'Required input is missing', details: x, extra_info: { input_name: x } });
        }
        continue;
      }
      let val = inputs[x];
      if (isLink(val)) {
        if (val.length !== 2) {
          errs.push({ type: 'bad_linked_input', message: 'Bad linked input, must be a length-2 list of [node_id, slot_index]', details: x, extra_info: { input_name: x, input_config: info, received_value: val } });
          continue;
        }
        const oId = val[0];
        const src = prompt[oId];
        if (!src) throw new PyError('KeyError', pyRepr(oId));
        const rt = classes[src.class_type].returns;
        if (!Number.isInteger(val[1]) || val[1] < 0 || val[1] >= rt.length) throw new PyError('IndexError', 'tuple index out of range');
        const received = rt[val[1]];
        if (!typeMatches(received, spec.type)) {
          errs.push({ type: 'return_type_mismatch', message: 'Return type mismatch between linked nodes', details: `${x}, received_type(${received}) mismatch input_type(${Array.isArray(spec.type) ? pyRepr(spec.type) : spec.type})`, extra_info: { input_name: x, input_config: info, received_type: received, linked_node: val } });
          continue;
        }
        try {
          const r = validateInputs(String(oId));
          if (!r.valid) { valid = false; continue; }
        } catch (ex) {
          valid = false;
          validated.set(String(oId), { valid: false, reasons: [{ type: 'exception_during_inner_validation', message: 'Exception when validating inner node', details: ex.message, extra_info: { input_name: x, input_config: info, exception_message: ex.message, exception_type: ex.pyType || 'Exception', traceback: fakeTraceback(ex), linked_node: val } }] });
          continue;
        }
      } else {
        try {
          if (val && typeof val === 'object' && '__value__' in val) val = val.__value__;
          if (spec.type === 'INT') val = pyInt(val);
          else if (spec.type === 'FLOAT') val = pyFloat(val);
          else if (spec.type === 'STRING') val = pyStr(val);
          else if (spec.type === 'BOOLEAN') val = pyBool(val);
        } catch (ex) {
          errs.push({ type: 'invalid_input_type', message: `Failed to convert an input value to a ${spec.type} value`, details: `${x}, ${pyStr(val)}, ${ex.message}`, extra_info: { input_name: x, input_config: info, received_value: val, exception_message: ex.message } });
          continue;
        }
        const fmt = (v) => (spec.extra._float ? pyFloatStr(v) : String(v));
        if (!(cls.validate && x === 'image')) {
          if (spec.extra.min !== undefined && val < spec.extra.min) {
            errs.push({ type: 'value_smaller_than_min', message: `Value ${fmt(val)} smaller than min of ${fmt(spec.extra.min)}`, details: x, extra_info: { input_name: x, input_config: info, received_value: val } });
            continue;
          }
          if (spec.extra.max !== undefined && val > spec.extra.max) {
            errs.push({ type: 'value_bigger_than_max', message: `Value ${fmt(val)} bigger than max of ${fmt(spec.extra.max)}`, details: x, extra_info: { input_name: x, input_config: info, received_value: val } });
            continue;
          }
          if (Array.isArray(spec.type) && !spec.type.includes(val)) {
            const big = spec.type.length > 20;
            errs.push({ type: 'value_not_in_list', message: 'Value not in list', details: `${x}: '${pyStr(val)}' not in ${big ? `(list of length ${spec.type.length})` : pyRepr(spec.type)}`, extra_info: { input_name: x, input_config: big ? null : info, received_value: val } });
            continue;
          }
        }
      }
    }
    if (cls.validate && errs.length === 0 && valid) {
      const r = cls.validate(inputs);
      if (r !== true) {
        errs.push({ type: 'custom_validation_failed', message: 'Custom validation failed for node', details: `image - ${r}`, extra_info: { input_name: 'image', input_config: null, received_value: inputs.image } });
      }
    }
    const res = { valid: valid && errs.length === 0, reasons: errs };
    validated.set(id, res);
    return res;
  }

  for (const o of outputs) {
    let valid = false;
    let reasons = [];
    try {
      const m = validateInputs(o);
      valid = m.valid; reasons = m.reasons;
    } catch (ex) {
      reasons = [{ type: 'exception_during_validation', message: 'Exception when validating node', details: ex.message, extra_info: { exception_type: ex.pyType || 'Exception', traceback: fakeTraceback(ex) } }];
      validated.set(o, { valid: false, reasons });
    }
    if (valid) { goodOutputs.push(o); continue; }
    if (reasons.length > 0) errors.push([o, reasons]);
    for (const [nodeId, r] of validated) {
      if (!r.valid && r.reasons.length > 0) {
        if (!nodeErrors[nodeId]) nodeErrors[nodeId] = { errors: r.reasons, dependent_outputs: [], class_type: prompt[nodeId].class_type };
        nodeErrors[nodeId].dependent_outputs.push(o);
      }
    }
  }
  if (goodOutputs.length === 0) {
    const lines = [];
    for (const [, rs] of errors) for (const e of rs) lines.push(`${e.message}: ${e.details}`);
    return { ok: false, error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation', details: lines.join('\n'), extra_info: {} }, nodeErrors };
  }
  return { ok: true, outputs: goodOutputs, nodeErrors };
}

function publicExtra(extra) {
  const { _float, ...rest } = extra;
  return rest;
}
function fakeTraceback(ex) {
  return [`  File "fake_comfyui/execution.py", line 1, in validate_inputs\n    raise ${ex.pyType || 'Exception'}(${pyRepr(ex.message)})\n`];
}

// ---------------------------------------------------------------- the fake

function createComfyFake(options) {
  const opt = options || {};
  const fs = createFileStore();
  const classes = makeNodeClasses(fs);
  let st;
  const sockets = new Map(); // sid -> ws

  function resetState() {
    if (st && st.running) st.running.interrupted = true;
    fs.clear();
    st = {
      latencyMs: opt.latencyMs || 0, failNodes: [], queue: [], running: null, history: new Map(),
      counter: 0, interruptions: [],
    };
  }
  resetState();

  // -------------------------------------------------------------- ws messaging

  function queueRemaining() { return st.queue.length + (st.running ? 1 : 0); }
  function send(sid, type, data) {
    const msg = { type, data };
    if (sid === null) { for (const ws of sockets.values()) ws.sendJson(msg); return; }
    const ws = sockets.get(sid);
    if (ws) ws.sendJson(msg);
  }
  function broadcastStatus() { send(null, 'status', { status: { exec_info: { queue_remaining: queueRemaining() } } }); }

  // -------------------------------------------------------------- executor

  function sleep(ms, job) {
    return new Promise((resolve) => {
      if (ms <= 0) { setImmediate(resolve); return; }
      const end = Date.now() + ms;
      const tick = () => {
        if (job.interrupted || Date.now() >= end) resolve();
        else setTimeout(tick, Math.min(10, end - Date.now()));
      };
      tick();
    });
  }

  function executionOrder(prompt, outputs) {
    const order = []; const seen = new Set();
    const visit = (id) => {
      if (seen.has(id)) return;
      seen.add(id);
      for (const v of Object.values(prompt[id].inputs || {})) if (isLink(v)) visit(String(v[0]));
      order.push(id);
    };
    for (const o of outputs) visit(o);
    return order;
  }

  function findFailure(id, classType) {
    const i = st.failNodes.findIndex((f) => (f.node_id !== undefined ? String(f.node_id) === id : f.class_type === classType));
    if (i < 0) return null;
    const f = st.failNodes[i];
    if (f.count !== undefined) { f.count -= 1; if (f.count <= 0) st.failNodes.splice(i, 1); }
    return f;
  }

  async function runJob(job) {
    const { prompt, promptId, clientId } = job;
    const messages = [];
    const ts = () => Date.now();
    // add_message: recorded in history; sent to the client (or broadcast when asked)
    const addMessage = (event, data, broadcast) => {
      const d = { ...data, timestamp: ts() };
      messages.push([event, d]);
      if (clientId !== null) send(clientId, event, d);
      else if (broadcast) send(null, event, d);
    };
    const toClient = (event, data) => { if (clientId !== null) send(clientId, event, data); };
    const outputsUi = {};
    const meta = {};
    const results = new Map();
    const executed = [];
    let failed = null;
    addMessage('execution_start', { prompt_id: promptId }, false);
    addMessage('execution_cached', { nodes: [], prompt_id: promptId }, false);
    const ctxFor = (id) => ({
      save: (frames, prefix, type) => {
        let sub = path.posix.dirname(prefix);
        const base = path.posix.basename(prefix);
        if (sub === '.') sub = '';
        if (sub.split('/').includes('..') || sub.startsWith('/')) throw new PyError('Exception', `**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: ${sub}\n         output_dir: /fake/${type}`);
        const re = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}_(\\d{5})_\\.png$`);
        let counter = 1;
        for (const f of fs.dirs[type].values()) {
          const m = f.subfolder === sub ? re.exec(f.name) : null;
          if (m) counter = Math.max(counter, Number(m[1]) + 1);
        }
        const images = [];
        const texts = { prompt: JSON.stringify(prompt) };
        for (const [k, v] of Object.entries(job.extraData.extra_pnginfo || {})) texts[k] = JSON.stringify(v);
        for (const fr of frames) {
          const name = `${base}_${String(counter).padStart(5, '0')}_.png`;
          fs.put(type, sub, name, frameToPng(fr, texts));
          images.push({ filename: name, subfolder: sub, type });
          counter += 1;
        }
        return { ui: { images } };
      },
    });
    for (const id of job.order) {
      if (job.interrupted) break;
      const node = prompt[id];
      const cls = classes[node.class_type];
      toClient('executing', { node: id, display_node: id, prompt_id: promptId });
      const inputs = {};
      const currentInputs = {};
      for (const [k, v] of Object.entries(node.inputs || {})) {
        if (isLink(v)) inputs[k] = results.get(String(v[0]))[v[1]];
        else {
          const spec = inputSpec(cls, k);
          let val = v && typeof v === 'object' && '__value__' in v ? v.__value__ : v;
          if (spec && spec.type === 'INT') val = pyInt(val);
          else if (spec && spec.type === 'FLOAT') val = pyFloat(val);
          inputs[k] = val;
        }
        currentInputs[k] = [isLink(v) ? `<output ${v[1]} of node ${v[0]}>` : inputs[k]];
      }
      const steps = cls.progress ? Math.min(cls.progress(inputs), 100) : 0;
      if (steps > 0) {
        for (let s = 1; s <= steps && !job.interrupted; s++) {
          await sleep(st.latencyMs / steps, job);
          if (!job.interrupted) toClient('progress', { value: s, max: steps, prompt_id: promptId, node: id });
        }
      } else {
        await sleep(st.latencyMs, job);
      }
      if (job.interrupted) break;
      const fail = findFailure(id, node.class_type);
      let out;
      try {
        if (fail) throw new PyError(fail.exception_type || 'RuntimeError', fail.exception_message || `Injected failure in node ${id}`);
        out = cls.run(inputs, ctxFor(id));
      } catch (ex) {
        failed = {
          prompt_id: promptId, node_id: id, node_type: node.class_type, executed: [...executed],
          exception_message: ex.message, exception_type: ex.pyType || 'Exception',
          traceback: [`  File "fake_comfyui/execution.py", line 1, in execute\n    ${node.class_type}.run()\n`],
          current_inputs: currentInputs, current_outputs: [...executed],
        };
        break;
      }
      if (out && out.ui) {
        outputsUi[id] = out.ui;
        meta[id] = { node_id: id, display_node: id, parent_node: null, real_node_id: id };
        toClient('executed', { node: id, display_node: id, output: out.ui, prompt_id: promptId });
        results.set(id, []);
      } else {
        results.set(id, out);
      }
      executed.push(id);
    }
    let statusStr = 'success';
    if (job.interrupted) {
      statusStr = 'error';
      const cur = job.order[executed.length];
      addMessage('execution_interrupted', { prompt_id: promptId, node_id: cur || null, node_type: cur ? prompt[cur].class_type : null, executed: [...executed] }, true);
    } else if (failed) {
      statusStr = 'error';
      addMessage('execution_error', failed, false);
    } else {
      addMessage('execution_success', { prompt_id: promptId }, false);
    }
    st.history.set(promptId, {
      prompt: [job.number, promptId, prompt, job.extraData, job.outputs],
      outputs: outputsUi,
      status: { status_str: statusStr, completed: statusStr === 'success', messages },
      meta,
    });
    while (st.history.size > 10000) st.history.delete(st.history.keys().next().value);
  }

  async function pump() {
    if (st.running || st.queue.length === 0) return;
    st.queue.sort((a, b) => a.number - b.number || a.seq - b.seq);
    const job = st.queue.shift();
    st.running = job;
    const myState = st;
    try {
      await runJob(job);
    } catch (e) {
      common.log('comfyui', `executor crashed: ${e && e.stack}`);
    }
    if (st !== myState) return; // reset while running
    st.running = null;
    if (job.clientId !== null) send(job.clientId, 'executing', { node: null, prompt_id: job.promptId });
    broadcastStatus();
    setImmediate(pump);
  }

  // -------------------------------------------------------------- HTTP API

  async function postPrompt(req, res) {
    const body = await common.readJson(req);
    if (!body || typeof body !== 'object' || !('prompt' in body)) {
      return sendJson(res, 400, { error: { type: 'no_prompt', message: 'No prompt provided', details: 'No prompt provided', extra_info: {} }, node_errors: {} });
    }
    const prompt = body.prompt;
    if (!prompt || typeof prompt !== 'object' || Array.isArray(prompt)) {
      return sendJson(res, 400, { error: { type: 'invalid_prompt', message: 'Cannot execute because the prompt is not an object.', details: '', extra_info: {} }, node_errors: {} });
    }
    let number = st.counter;
    if ('number' in body) number = Number(body.number);
    else if (body.front) number = -number;
    st.counter += 1;
    const v = validatePrompt(prompt, classes, Array.isArray(body.partial_execution_targets) ? body.partial_execution_targets.map(String) : null);
    if (!v.ok) return sendJson(res, 400, { error: v.error, node_errors: v.nodeErrors });
    const promptId = typeof body.prompt_id === 'string' && body.prompt_id ? body.prompt_id : crypto.randomUUID();
    const extraData = { ...(body.extra_data || {}) };
    if (body.client_id !== undefined) extraData.client_id = body.client_id;
    extraData.create_time = Date.now();
    const clientId = extraData.client_id !== undefined && extraData.client_id !== null ? String(extraData.client_id) : null;
    const job = {
      prompt, promptId, number, clientId, extraData, outputs: v.outputs,
      order: executionOrder(prompt, v.outputs), seq: st.counter, interrupted: false,
    };
    st.queue.push(job);
    broadcastStatus();
    setImmediate(pump);
    return sendJson(res, 200, { prompt_id: promptId, number, node_errors: v.nodeErrors });
  }

  async function uploadImage(req, res) {
    const body = await readBody(req);
    const parts = parseMultipart(body, req.headers['content-type']);
    const image = parts.image;
    if (!image || !image.filename) { res.writeHead(400, { 'Content-Length': 0 }); return res.end(); }
    const type = parts.type ? parts.type.data.toString() : 'input';
    if (!['input', 'temp', 'output'].includes(type)) { res.writeHead(400, { 'Content-Length': 0 }); return res.end(); }
    const subfolder = parts.subfolder ? parts.subfolder.data.toString() : '';
    const overwrite = parts.overwrite ? ['true', '1'].includes(parts.overwrite.data.toString()) : false;
    let filename = image.filename;
    if (filename.includes('/') || filename.includes('\\') || filename.split('/').includes('..') || subfolder.split('/').includes('..') || subfolder.startsWith('/')) {
      res.writeHead(400, { 'Content-Length': 0 }); return res.end();
    }
    if (!overwrite) {
      const ext = path.extname(filename); const stem = filename.slice(0, filename.length - ext.length);
      let i = 1;
      while (fs.get(type, subfolder, filename)) {
        if (fs.get(type, subfolder, filename).buf.equals(image.data)) break; // same content: reuse name
        filename = `${stem} (${i})${ext}`;
        i += 1;
      }
    }
    fs.put(type, subfolder, filename, Buffer.from(image.data));
    return sendJson(res, 200, { name: filename, subfolder, type });
  }

  function view(req, res, ctx) {
    let filename = ctx.query.get('filename');
    if (!filename) { res.writeHead(404, { 'Content-Length': 0 }); return res.end(); }
    let type = ctx.query.get('type') || 'output';
    const m = /^(.*) \[(input|output|temp)\]$/.exec(filename);
    if (m) { filename = m[1]; type = m[2]; }
    if (filename.startsWith('/') || filename.includes('..')) { res.writeHead(400, { 'Content-Length': 0 }); return res.end(); }
    const subfolder = ctx.query.get('subfolder') || '';
    if (subfolder.startsWith('/') || subfolder.split('/').includes('..')) { res.writeHead(403, { 'Content-Length': 0 }); return res.end(); }
    if (!fs.dirs[type]) { res.writeHead(400, { 'Content-Length': 0 }); return res.end(); }
    const f = fs.get(type, subfolder, filename);
    if (!f) { res.writeHead(404, { 'Content-Length': 0 }); return res.end(); }
    const ext = path.extname(filename).toLowerCase();
    const ctype = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp', '.gif': 'image/gif' }[ext] || 'application/octet-stream';
    res.writeHead(200, { 'Content-Type': ctype, 'Content-Length': f.buf.length, 'Content-Disposition': `filename="${filename}"` });
    return res.end(f.buf);
  }

  function objectInfo(name) {
    const c = classes[name];
    const spec = (obj) => Object.fromEntries(Object.entries(obj).map(([k, v]) => {
      const s = typeof v === 'function' ? v() : v;
      return [k, s.length > 1 ? [s[0], publicExtra(s[1])] : [s[0]]];
    }));
    return {
      input: { required: spec(c.required), ...(Object.keys(c.optional).length ? { optional: spec(c.optional) } : {}) },
      input_order: { required: Object.keys(c.required), ...(Object.keys(c.optional).length ? { optional: Object.keys(c.optional) } : {}) },
      output: c.returns, output_is_list: c.returns.map(() => false), output_name: c.returns,
      name, display_name: name, description: '', python_module: 'nodes', category: c.category,
      output_node: !!c.output, deprecated: false, experimental: false,
    };
  }

  function historyEntries(limit) {
    const entries = [...st.history.entries()];
    const pick = limit ? entries.slice(-limit) : entries;
    return Object.fromEntries(pick);
  }

  function queueEntry(j) { return [j.number, j.promptId, j.prompt, j.extraData, j.outputs]; }

  async function handle(req, res, ctx) {
    let p = ctx.path;
    if (p.startsWith('/api/')) p = p.slice(4);
    const key = `${req.method} ${p}`;
    let m;
    switch (key) {
      case 'POST /prompt': return postPrompt(req, res);
      case 'GET /prompt': return sendJson(res, 200, { exec_info: { queue_remaining: queueRemaining() } });
      case 'POST /upload/image': return uploadImage(req, res);
      case 'GET /view': return view(req, res, ctx);
      case 'GET /history': {
        const n = ctx.query.get('max_items');
        return sendJson(res, 200, historyEntries(n ? Number(n) : 0));
      }
      case 'POST /history': {
        const b = (await common.readJson(req)) || {};
        if (b.clear) st.history.clear();
        for (const id of b.delete || []) st.history.delete(id);
        res.writeHead(200, { 'Content-Length': 0 }); return res.end();
      }
      case 'GET /queue':
        return sendJson(res, 200, { queue_running: st.running ? [queueEntry(st.running)] : [], queue_pending: st.queue.map(queueEntry) });
      case 'POST /queue': {
        const b = (await common.readJson(req)) || {};
        if (b.clear) st.queue = [];
        if (b.delete) st.queue = st.queue.filter((j) => !b.delete.includes(j.promptId));
        broadcastStatus();
        res.writeHead(200, { 'Content-Length': 0 }); return res.end();
      }
      case 'POST /interrupt': {
        const b = await common.readJson(req).catch(() => null);
        const target = b && b.prompt_id;
        if (st.running && (!target || target === st.running.promptId)) {
          st.running.interrupted = true;
          st.interruptions.push({ prompt_id: st.running.promptId, at: new Date().toISOString() });
        }
        res.writeHead(200, { 'Content-Length': 0 }); return res.end();
      }
      case 'POST /free': res.writeHead(200, { 'Content-Length': 0 }); return res.end();
      case 'GET /system_stats':
        return sendJson(res, 200, {
          system: {
            os: 'posix', ram_total: 25769803776, ram_free: 17179869184, comfyui_version: '0.3.40-fake',
            required_frontend_version: '1.21.0', python_version: '3.12.3 (fake)', pytorch_version: '2.7.0+cpu',
            embedded_python: false, argv: ['main.py', '--cpu', '--listen', '127.0.0.1'],
          },
          devices: [{ name: 'cpu', type: 'cpu', index: null, vram_total: 0, vram_free: 0, torch_vram_total: 0, torch_vram_free: 0 }],
        });
      case 'GET /object_info':
        return sendJson(res, 200, Object.fromEntries(Object.keys(classes).map((n) => [n, objectInfo(n)])));
      default:
        break;
    }
    if (req.method === 'GET' && (m = /^\/history\/([^/]+)$/.exec(p))) {
      const h = st.history.get(decodeURIComponent(m[1]));
      return sendJson(res, 200, h ? { [decodeURIComponent(m[1])]: h } : {});
    }
    if (req.method === 'GET' && (m = /^\/object_info\/([^/]+)$/.exec(p))) {
      const n = decodeURIComponent(m[1]);
      return sendJson(res, 200, classes[n] ? { [n]: objectInfo(n) } : {});
    }
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': 14 });
    return res.end('404: Not Found');
  }

  const admin = {
    'POST /latency': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      st.latencyMs = Number(b.ms) || 0;
      sendJson(res, 200, { latency_ms: st.latencyMs });
    },
    'POST /fail_node': async (req, res) => {
      const b = (await common.readJson(req)) || {};
      if (b.node_id === undefined && !b.class_type) throw new HttpError(400, { error: 'need node_id or class_type' });
      st.failNodes.push({ ...b });
      sendJson(res, 200, { fail_nodes: st.failNodes });
    },
    'DELETE /fail_node': async (req, res) => { st.failNodes = []; sendJson(res, 200, { ok: true }); },
    'GET /files': async (req, res) => {
      const out = {};
      for (const [t, d] of Object.entries(fs.dirs)) {
        out[t] = [...d.values()].map((f) => ({ name: f.name, subfolder: f.subfolder, size: f.buf.length, sha256: crypto.createHash('sha256').update(f.buf).digest('hex') }));
      }
      sendJson(res, 200, out);
    },
    'GET /ws': async (req, res) => sendJson(res, 200, { clients: [...sockets.keys()] }),
    'POST /ws/drop': async (req, res) => {
      const n = sockets.size;
      for (const ws of [...sockets.values()]) { ws.open = false; ws.socket.destroy(); }
      sockets.clear();
      sendJson(res, 200, { dropped: n });
    },
    'GET /interruptions': async (req, res) => sendJson(res, 200, { interruptions: st.interruptions }),
  };

  const fake = common.createFake({
    name: 'comfyui', handle, admin,
    errorBody: (status, reason, message) => ({ error: message || reason || `HTTP ${status}` }),
    onReset: () => resetState(),
  });
  fake.server.on('upgrade', (req, socket) => {
    const url = new URL(req.url, 'http://fake.local');
    if (url.pathname !== '/ws' && url.pathname !== '/api/ws') { socket.destroy(); return; }
    const sid = url.searchParams.get('clientId') || crypto.randomUUID().replace(/-/g, '');
    const ws = acceptWebSocket(req, socket, (w) => { if (sockets.get(sid) === w) sockets.delete(sid); });
    if (!ws) return;
    sockets.set(sid, ws);
    ws.sendJson({ type: 'status', data: { status: { exec_info: { queue_remaining: queueRemaining() } }, sid } });
  });
  const origClose = fake.close.bind(fake);
  fake.close = () => {
    for (const ws of sockets.values()) ws.socket.destroy();
    sockets.clear();
    if (st.running) st.running.interrupted = true;
    return origClose();
  };
  fake.files = fs;
  fake.state = () => st;
  return fake;
}

module.exports = { createComfyFake, validatePrompt, makeNodeClasses, createFileStore, frameFromBytes, frameToPng };

if (require.main === module) {
  let args;
  try {
    args = common.parseArgs(process.argv.slice(2), { port: 0, host: '127.0.0.1', 'latency-ms': 0, verbose: false });
  } catch (e) {
    process.stderr.write(`comfyui fake: ${e.message}\n`);
    process.exit(2);
  }
  const fake = createComfyFake({ latencyMs: args['latency-ms'] });
  common.runMain(fake, args).catch((e) => { process.stderr.write(`comfyui fake: ${e.message}\n`); process.exit(1); });
}
