// The retrieval page: the exported student embeds a picture (camera, file or drop) in the browser
// and searches the gallery `mdistill web` wrote beside it. Everything it loads is local: app.json
// (written by mobile_distill/web/app.py), the model files, the gallery and the runtimes in vendor/.
// URL options: ?runtime=litert|onnx  &precision=float32|int8|...  &backend=wasm|webgpu  &threads=N
import { resize, toInput } from "./preprocess.js";
import { topK } from "./retrieval.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

/** A problem the person must see: in the page and as a console error a test can read. */
function report(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  console.error(`mdistill: ${message}`);
}

function clearError() {
  $("error").hidden = true;
}

async function fetchOk(url, what) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${what} (${url}) could not be loaded: HTTP ${response.status}`);
  return response;
}

function pickArtifact(app) {
  const runtime = params.get("runtime") || "litert";
  const runtimes = { litert: "tflite", onnx: "onnx" };
  if (!(runtime in runtimes)) throw new Error(`unknown runtime '${runtime}': use ?runtime=litert or ?runtime=onnx`);
  const candidates = app.artifacts.filter((a) => a.format === runtimes[runtime]);
  if (!candidates.length) throw new Error(`this app holds no ${runtimes[runtime]} file for ${runtime}: export one (mdistill export --format ${runtimes[runtime]}) and run mdistill web again`);
  const precision = params.get("precision");
  const artifact = precision ? candidates.find((a) => a.precision === precision) : candidates[0];
  if (!artifact) throw new Error(`no ${precision} ${runtimes[runtime]} file here; there are: ${candidates.map((a) => a.precision).join(", ")}`);
  return { runtime, artifact };
}

function threadCount() {
  const asked = parseInt(params.get("threads") || "0", 10);
  // threaded WebAssembly needs SharedArrayBuffer, which the browser gives only to an isolated page
  if (!crossOriginIsolated) return 1;
  return asked > 0 ? asked : Math.min(navigator.hardwareConcurrency || 1, 4);
}

async function openLiteRt(bytes, artifact, backend, threads) {
  const lrt = await import("./vendor/litertjs/core/index.js");
  await lrt.loadLiteRt(new URL("vendor/litertjs/wasm/", location.href).href, { threads: threads > 1 });
  const model = await lrt.loadAndCompile(bytes, { accelerator: backend, cpuOptions: { numThreads: threads } });
  return async (input, shape) => {
    const tensor = new lrt.Tensor(input, shape);
    const outputs = await model.run(tensor);
    tensor.delete();
    const first = outputs[0].accelerator === "wasm" ? outputs[0] : await outputs[0].moveTo("wasm");
    const values = Float32Array.from(first.toTypedArray());
    if (first !== outputs[0]) first.delete();
    outputs.forEach((t) => t.delete());
    return values;
  };
}

async function openOnnx(bytes, artifact, backend, threads) {
  const ort = await import(backend === "webgpu" ? "./vendor/onnxruntime-web/ort.webgpu.min.mjs"
    : "./vendor/onnxruntime-web/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = new URL("vendor/onnxruntime-web/", location.href).href;
  ort.env.wasm.numThreads = threads;
  const session = await ort.InferenceSession.create(bytes, { executionProviders: [backend] });
  const dtype = artifact.input.dtype === "uint8" ? "uint8" : "float32";
  return async (input, shape) => {
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor(dtype, input, shape) });
    return Float32Array.from(out[session.outputNames[0]].data);
  };
}

/** Picture (ImageBitmap, image element, video frame) -> RGBA bytes drawn on white, upright. */
function pixels(picture, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(picture, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

async function decode(blob, name) {
  try {
    // no colour conversion: the bytes the file holds, as PIL reads them on the host
    return await createImageBitmap(blob, { colorSpaceConversion: "none", imageOrientation: "from-image" });
  } catch (e) {
    throw new Error(`${name || "this file"} is not an image the browser can decode (${blob.type || "unknown type"}): choose a PNG, JPEG or WebP picture`);
  }
}

class App {
  async start() {
    this.app = await (await fetchOk("app.json", "the app's description")).json();
    const { runtime, artifact } = pickArtifact(this.app);
    const backend = params.get("backend") || "wasm";
    if (!["wasm", "webgpu"].includes(backend)) throw new Error(`unknown backend '${backend}': use wasm or webgpu`);
    if (backend === "webgpu" && !(navigator.gpu && await navigator.gpu.requestAdapter())) {
      throw new Error("WebGPU is not available in this browser (no adapter): open the page without ?backend=webgpu to run on WebAssembly");
    }
    const layout = artifact.input.layout.toUpperCase();
    if (!["NHWC", "NCHW"].includes(layout) || !["float32", "uint8"].includes(artifact.input.dtype)) {
      throw new Error(`the model's input (${layout}, ${artifact.input.dtype}) is not one this page can feed: export with --input-layout nhwc|nchw and --input-dtype float32|uint8`);
    }
    this.spec = { size: this.app.image_size, layout, dtype: artifact.input.dtype };
    const bytes = new Uint8Array(await (await fetchOk(artifact.file, "the model file")).arrayBuffer());
    this.threads = threadCount();
    this.run = await (runtime === "litert" ? openLiteRt : openOnnx)(bytes, artifact, backend, this.threads);
    this.info = {
      runtime: runtime === "litert" ? "LiteRT.js" : "ONNX Runtime Web", backend: backend === "webgpu" ? "WebGPU"
        : this.threads > 1 ? `WASM with ${this.threads} threads` : "WASM", file: artifact.file,
      precision: artifact.precision, size_bytes: bytes.length, input: this.spec, cross_origin_isolated: crossOriginIsolated,
    };
    await this.loadGallery();
    this.showInfo();
    return this.info;
  }

  async loadGallery() {
    if (!this.app.gallery) return;
    const g = await (await fetchOk(this.app.gallery, "the gallery")).json();
    const buffer = await (await fetchOk(g.embeddings, "the gallery embeddings")).arrayBuffer();
    if (buffer.byteLength !== g.count * g.dim * 4) {
      throw new Error(`${g.embeddings} has ${buffer.byteLength} bytes, expected ${g.count} x ${g.dim} float32: run mdistill web --gallery again`);
    }
    this.gallery = { ...g, rows: new Float32Array(buffer) };
  }

  showInfo() {
    const i = this.info;
    const gallery = this.gallery ? `${this.gallery.count} images embedded by the ${this.gallery.embedding.kind}` : "none";
    $("info").textContent = `${i.runtime} · ${i.backend} · ${i.file} (${i.precision}, ${(i.size_bytes / 1e6).toFixed(2)} MB) · input ${i.input.size} px ${i.input.layout} ${i.input.dtype} · gallery: ${gallery}`;
  }

  /** RGBA pixels of any size -> the student's embedding, timed (ms). */
  async embedPixels(rgba, width, height) {
    const s = this.spec;
    const input = toInput(resize(rgba, width, height, s.size), s);
    const shape = s.layout === "NHWC" ? [1, s.size, s.size, 3] : [1, 3, s.size, s.size];
    const t0 = performance.now();
    const embedding = await this.run(input, shape);
    return { embedding, ms: performance.now() - t0 };
  }

  async embedBlob(blob, name) {
    const bitmap = await decode(blob, name);
    const rgba = pixels(bitmap, bitmap.width, bitmap.height);
    return this.embedPixels(rgba, bitmap.width, bitmap.height);
  }

  search(embedding, k = 8) {
    if (!this.gallery) throw new Error("this app has no gallery: run mdistill web EXPORT_DIR --gallery DATA");
    return topK(embedding, this.gallery.rows, this.gallery.dim, k).map((h) => ({ ...h, ...this.gallery.items[h.index] }));
  }

  async query(blob, name) {
    clearError();
    const { embedding, ms } = await this.embedBlob(blob, name);
    $("latency").textContent = `${ms.toFixed(1)} ms per image (${this.info.runtime}, ${this.info.backend})`;
    if (!this.gallery) {
      report("this app has no gallery to search: run mdistill web EXPORT_DIR --gallery DATA");
      return [];
    }
    const hits = this.search(embedding);
    const list = $("results");
    list.replaceChildren(...hits.map((h) => {
      const item = document.createElement("li");
      item.dataset.index = h.index;
      const img = document.createElement("img");
      img.src = h.image;
      img.alt = h.label;
      const text = document.createElement("span");
      text.textContent = `${h.label} ${h.score.toFixed(3)}`;
      item.append(img, text);
      return item;
    }));
    return hits;
  }
}

function wire(app) {
  const guarded = (fn) => async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      report(e.message);
    }
  };
  const query = guarded(async (file) => {
    $("preview").src = URL.createObjectURL(file);
    await app.query(file, file.name);
  });
  $("file").addEventListener("change", (e) => e.target.files[0] && query(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => e.preventDefault());
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer.files[0];
    if (file) query(file);
  });
  $("camera").addEventListener("click", guarded(async () => {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("this browser gives the page no camera (it needs https or localhost)");
    const video = $("video");
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.hidden = false;
    await video.play();
    $("snap").hidden = false;
  }));
  $("snap").addEventListener("click", guarded(async () => {
    const video = $("video");
    const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
    canvas.getContext("2d").drawImage(video, 0, 0);
    await query(new File([await canvas.convertToBlob({ type: "image/png" })], "camera.png", { type: "image/png" }));
  }));
}

const app = new App();
// The tests and `mdistill verify --browser` drive the page through this object: the same code
// path as a person's picture.
window.mdistill = {
  app,
  ready: app.start().then((info) => {
    wire(app);
    $("status").textContent = "ready";
    document.body.dataset.state = "ready";
    return info;
  }, (e) => {
    report(e.message);
    $("status").textContent = "failed";
    document.body.dataset.state = "failed";
    return null;
  }),
  /** Each image URL through the page's own path -> embeddings (arrays) and latencies (ms). */
  async embedUrls(urls) {
    const out = [];
    for (const url of urls) {
      const blob = await (await fetchOk(url, "the image")).blob();
      const bitmap = await decode(blob, url);
      const r = await app.embedPixels(pixels(bitmap, bitmap.width, bitmap.height), bitmap.width, bitmap.height);
      out.push({ embedding: Array.from(r.embedding), ms: r.ms });
    }
    return out;
  },
  /** The model alone on one image's input, `runs` times after `warmup` (ms each): what the host
   *  bench times, so the two compare. */
  async timeModel(url, warmup, runs) {
    const blob = await (await fetchOk(url, "the image")).blob();
    const bitmap = await decode(blob, url);
    const s = app.spec;
    const input = toInput(resize(pixels(bitmap, bitmap.width, bitmap.height), bitmap.width, bitmap.height, s.size), s);
    const shape = s.layout === "NHWC" ? [1, s.size, s.size, 3] : [1, 3, s.size, s.size];
    for (let i = 0; i < warmup; i++) await app.run(input, shape);
    const ms = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await app.run(input, shape);
      ms.push(performance.now() - t0);
    }
    return ms;
  },
  resize,
  toInput,
};
