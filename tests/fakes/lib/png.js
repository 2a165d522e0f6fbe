'use strict';
/*
 * Minimal PNG codec for the ComfyUI fake (node:zlib only).
 *   decodePng(buf) -> { width, height, rgb: Uint8Array (w*h*3) } or throws
 *     supports non-interlaced, bit depth 8 (and 16, high byte kept), colour
 *     types 0 gray, 2 RGB, 3 palette (8-bit), 4 gray+alpha, 6 RGBA. Alpha is
 *     dropped without compositing (like PIL convert("RGB")).
 *   encodePng(width, height, rgb, texts?) -> Buffer  RGB 8-bit, filter 0,
 *     texts: {keyword: string} written as tEXt chunks.
 *   isPng(buf) -> bool
 * Owned by the ComfyUI fake (tests/fakes/comfyui.js).
 */
const zlib = require('node:zlib');

const SIG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function isPng(buf) {
  return Buffer.isBuffer(buf) && buf.length >= 8 && buf.subarray(0, 8).equals(SIG);
}

function paeth(a, b, c) {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  if (pa <= pb && pa <= pc) return a;
  if (pb <= pc) return b;
  return c;
}

function decodePng(buf) {
  if (!isPng(buf)) throw new Error('not a PNG');
  let off = 8;
  let ihdr = null;
  let palette = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    off += 12 + len;
    if (type === 'IHDR') {
      ihdr = {
        width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8],
        color: data[9], interlace: data[12],
      };
    } else if (type === 'PLTE') palette = data;
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
  }
  if (!ihdr) throw new Error('PNG without IHDR');
  const { width, height, depth, color, interlace } = ihdr;
  if (interlace !== 0) throw new Error('interlaced PNG not supported');
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[color];
  if (!channels) throw new Error(`PNG colour type ${color} not supported`);
  if (depth !== 8 && !(depth === 16 && color !== 3)) throw new Error(`PNG bit depth ${depth} not supported`);
  const bytesPer = depth / 8;
  const bpp = channels * bytesPer;
  const stride = width * bpp;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  if (raw.length < height * (stride + 1)) throw new Error('PNG data truncated');
  const cur = Buffer.alloc(stride);
  let prev = Buffer.alloc(stride);
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const base = y * (stride + 1);
    const filter = raw[base];
    for (let i = 0; i < stride; i++) {
      const x = raw[base + 1 + i];
      const a = i >= bpp ? cur[i - bpp] : 0;
      const b = prev[i];
      const c = i >= bpp ? prev[i - bpp] : 0;
      let v;
      switch (filter) {
        case 0: v = x; break;
        case 1: v = x + a; break;
        case 2: v = x + b; break;
        case 3: v = x + ((a + b) >> 1); break;
        case 4: v = x + paeth(a, b, c); break;
        default: throw new Error(`bad PNG filter ${filter}`);
      }
      cur[i] = v & 0xff;
    }
    for (let xpx = 0; xpx < width; xpx++) {
      const o = (y * width + xpx) * 3;
      const s = xpx * bpp;
      const sample = (ch) => cur[s + ch * bytesPer]; // high byte for 16-bit
      if (color === 0 || color === 4) {
        const g = sample(0);
        rgb[o] = g; rgb[o + 1] = g; rgb[o + 2] = g;
      } else if (color === 3) {
        const idx = cur[s];
        if (!palette || idx * 3 + 2 >= palette.length) throw new Error('PNG palette index out of range');
        rgb[o] = palette[idx * 3]; rgb[o + 1] = palette[idx * 3 + 1]; rgb[o + 2] = palette[idx * 3 + 2];
      } else {
        rgb[o] = sample(0); rgb[o + 1] = sample(1); rgb[o + 2] = sample(2);
      }
    }
    prev = Buffer.from(cur);
  }
  return { width, height, rgb };
}

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function encodePng(width, height, rgb, texts) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const stride = width * 3;
  const raw = Buffer.alloc(height * (stride + 1));
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0;
    Buffer.from(rgb.buffer, rgb.byteOffset + y * stride, stride).copy(raw, y * (stride + 1) + 1);
  }
  const parts = [SIG, chunk('IHDR', ihdr)];
  for (const [k, v] of Object.entries(texts || {})) {
    parts.push(chunk('tEXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0]), Buffer.from(String(v), 'latin1')])));
  }
  parts.push(chunk('IDAT', zlib.deflateSync(raw, { level: 4 })));
  parts.push(chunk('IEND', Buffer.alloc(0)));
  return Buffer.concat(parts);
}

// tEXt chunks of a PNG as {keyword: text}.
function readPngText(buf) {
  const out = {};
  if (!isPng(buf)) return out;
  let off = 8;
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (type === 'tEXt') {
      const data = buf.subarray(off + 8, off + 8 + len);
      const z = data.indexOf(0);
      out[data.toString('latin1', 0, z)] = data.toString('latin1', z + 1);
    }
    off += 12 + len;
  }
  return out;
}

module.exports = { decodePng, encodePng, isPng, readPngText, crc32 };
