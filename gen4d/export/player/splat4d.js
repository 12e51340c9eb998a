// Decoder of gen4d's .splat4d files (format version 1, docs/export.md): the JavaScript twin of
// read_splat4d in gen4d/export/splat4d.py. Same checks, same dequantisation; frames are decoded on
// demand (the file's bytes stay as they are), so memory is the file plus a few decoded frames.
(function (global) {
  "use strict";

  const MAGIC = "SPLAT4D\0";
  const VERSION = 1;
  const HEADER_BYTES = 64;

  function halfToFloat(bits) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24;
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  class Splat4DAsset {
    constructor(bytes, header, offsets) {
      Object.assign(this, header);
      this.bytes = bytes;
      this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.offsets = offsets;
      this.sh = this._decodeSH();
      this._cache = new Map();
    }

    get scalesVary() {
      return (this.flags & 1) !== 0;
    }

    get opacityVary() {
      return (this.flags & 2) !== 0;
    }

    _decodeSH() {
      const values = new Float32Array(this.count * this.coeffs * 3);
      const start = this.offsets.sh;
      for (let i = 0; i < values.length; i++) values[i] = halfToFloat(this.view.getUint16(start + 2 * i, true));
      return values;
    }

    /** Frame ``index`` (0..frames-1) decoded as read_splat4d does: {means (N*3), quats (N*4, unit),
     * logScales (N*3), opacity (N, sigmoid of the stored logit)}. The last few frames are cached. */
    frame(index) {
      if (!(index >= 0 && index < this.frames)) throw new RangeError(`frame ${index}: expected 0..${this.frames - 1}`);
      const cached = this._cache.get(index);
      if (cached) return cached;
      const n = this.count;
      const view = this.view;
      const means = new Float32Array(n * 3);
      let offset = this.offsets.means + index * n * 3 * 2;
      for (let i = 0; i < n * 3; i++) {
        const axis = i % 3;
        const low = this.boxLow[axis];
        means[i] = low + (view.getUint16(offset + 2 * i, true) / 65535) * (this.boxHigh[axis] - low);
      }
      const quats = new Float32Array(n * 4);
      const codes = new Int8Array(this.bytes.buffer, this.bytes.byteOffset + this.offsets.quats + index * n * 4, n * 4);
      for (let i = 0; i < n; i++) {
        const w = codes[4 * i] / 127, x = codes[4 * i + 1] / 127, y = codes[4 * i + 2] / 127, z = codes[4 * i + 3] / 127;
        const norm = Math.max(Math.hypot(w, x, y, z), 1e-12);
        quats[4 * i] = w / norm;
        quats[4 * i + 1] = x / norm;
        quats[4 * i + 2] = y / norm;
        quats[4 * i + 3] = z / norm;
      }
      const scaleFrame = this.scalesVary ? index : 0;
      const logScales = new Float32Array(n * 3);
      offset = this.offsets.scales + scaleFrame * n * 3;
      const span = this.scaleHigh - this.scaleLow;
      for (let i = 0; i < n * 3; i++) logScales[i] = this.scaleLow + (this.bytes[offset + i] / 255) * span;
      const opacityFrame = this.opacityVary ? index : 0;
      const opacity = new Float32Array(n);
      offset = this.offsets.opacity + opacityFrame * n;
      // read_splat4d stores logit(clamp(o, 1e-4, 1 - 1e-4)); the renderer takes its sigmoid.
      for (let i = 0; i < n; i++) opacity[i] = Math.min(Math.max(this.bytes[offset + i] / 255, 1e-4), 1 - 1e-4);
      const frame = { means, quats, logScales, opacity };
      this._cache.set(index, frame);
      if (this._cache.size > 4) this._cache.delete(this._cache.keys().next().value);
      return frame;
    }
  }

  /** Parse a .splat4d file (ArrayBuffer or Uint8Array); throws Error with the reason when it is
   * not one, has another version, or its size disagrees with its header (truncated or damaged). */
  function decode(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const magic = String.fromCharCode(...bytes.subarray(0, MAGIC.length));
    if (bytes.length < HEADER_BYTES || magic !== MAGIC) {
      throw new Error("not a .splat4d file (it does not start with SPLAT4D\\0)");
    }
    const u32 = (at) => view.getUint32(at, true);
    const f32 = (at) => view.getFloat32(at, true);
    const version = u32(8);
    if (version !== VERSION) throw new Error(`splat4d version ${version}; this player reads version ${VERSION}`);
    const header = {
      count: u32(12),
      frames: u32(16),
      coeffs: u32(20),
      flags: u32(24),
      fps: f32(28),
      boxLow: [f32(32), f32(36), f32(40)],
      boxHigh: [f32(44), f32(48), f32(52)],
      scaleLow: f32(56),
      scaleHigh: f32(60),
    };
    const { count, frames, coeffs, flags } = header;
    if (count < 1 || frames < 1 || ![1, 4, 9, 16].includes(coeffs)) {
      throw new Error(`damaged header: ${count} Gaussians, ${frames} frames, ${coeffs} SH coefficients`);
    }
    const sizes = {
      sh: count * coeffs * 3 * 2,
      opacity: (flags & 2 ? frames : 1) * count,
      scales: (flags & 1 ? frames : 1) * count * 3,
      means: frames * count * 3 * 2,
      quats: frames * count * 4,
    };
    const offsets = {};
    let end = HEADER_BYTES;
    for (const [name, size] of Object.entries(sizes)) {
      offsets[name] = end;
      end += size;
    }
    if (bytes.length !== end) {
      throw new Error(`${bytes.length} bytes, the header implies ${end}: truncated or damaged`);
    }
    return new Splat4DAsset(bytes, header, offsets);
  }

  global.gen4dSplat4D = { decode, halfToFloat, MAGIC, VERSION };
})(typeof window !== "undefined" ? window : globalThis);
