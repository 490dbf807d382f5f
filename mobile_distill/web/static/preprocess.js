// Pixels to model input, bit for bit as the Android core (android_demo/core/.../Preprocess.kt)
// and mobile_distill.export.android.box_resize / to_input: centre-crop the largest square,
// box-average it to size x size with integer arithmetic (mean rounded half up), then RGB / 255 as
// float32 (or raw uint8) in the model's layout. Alpha is not read: the page draws each picture on
// white first, as the toolkit composites transparency on white.

/** RGBA bytes (width x height, row-major) -> size x size RGB bytes. */
export function resize(rgba, width, height, size) {
  if (rgba.length !== width * height * 4) throw new Error(`got ${rgba.length / 4} pixels for ${width} x ${height}`);
  const side = Math.min(width, height);
  const x0 = Math.floor((width - side) / 2);
  const y0 = Math.floor((height - side) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let oy = 0; oy < size; oy++) {
    const sy0 = Math.floor(oy * side / size);
    const sy1 = Math.max(Math.floor((oy + 1) * side / size), sy0 + 1);
    for (let ox = 0; ox < size; ox++) {
      const sx0 = Math.floor(ox * side / size);
      const sx1 = Math.max(Math.floor((ox + 1) * side / size), sx0 + 1);
      let r = 0, g = 0, b = 0;
      for (let sy = sy0; sy < sy1; sy++) {
        for (let sx = sx0; sx < sx1; sx++) {
          const p = ((y0 + sy) * width + x0 + sx) * 4;
          r += rgba[p]; g += rgba[p + 1]; b += rgba[p + 2];
        }
      }
      const n = (sy1 - sy0) * (sx1 - sx0);
      const o = (oy * size + ox) * 3;
      // (2 * sum + n) / (2 * n), integer division: the mean rounded half up
      out[o] = Math.floor((2 * r + n) / (2 * n));
      out[o + 1] = Math.floor((2 * g + n) / (2 * n));
      out[o + 2] = Math.floor((2 * b + n) / (2 * n));
    }
  }
  return out;
}

/** size x size RGB bytes -> the model's input array (Float32Array in [0, 1] or Uint8Array), in
 *  its layout ("NHWC" or "NCHW"). */
export function toInput(rgb, spec) {
  const n = spec.size * spec.size;
  if (rgb.length !== n * 3) throw new Error(`expected ${n} pixels, got ${rgb.length / 3}`);
  const out = spec.dtype === "uint8" ? new Uint8Array(n * 3) : new Float32Array(n * 3);
  const scale = spec.dtype === "uint8" ? (v) => v : (v) => Math.fround(v / 255);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) {
      const at = spec.layout === "NHWC" ? i * 3 + c : c * n + i;
      out[at] = scale(rgb[i * 3 + c]);
    }
  }
  return out;
}

/** The little-endian bytes of toInput's array (what the golden files hold). */
export function inputBytes(array) {
  if (array instanceof Uint8Array) return array;
  const bytes = new Uint8Array(array.length * 4);
  const view = new DataView(bytes.buffer);
  array.forEach((v, i) => view.setFloat32(i * 4, v, true));
  return bytes;
}
