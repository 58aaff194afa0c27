// Static attention explorer: redraws precomputed CLS-attention maps in the browser, no kernel, no network.
// The drawing follows vit_tutorial.attention.overlay_steps: bilinear resize (align_corners=False), then
// min-max normalisation (the classic recipe; a flat map becomes all ones) or one shared scale for all of an
// image's maps (its largest patch weight), image x map x amplify clipped to [0, 1]. A map whose spread is
// below data.flat_threshold is marked flat. With the in-browser model (vit.js and its weights), it also
// classifies the reader's own image.
function vitExplorer(root) {
  "use strict";
  const data = JSON.parse(root.querySelector(".vit-explorer-data").textContent);
  const g = data.grid;
  const rolloutLayer = data.layers.length - 1;
  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    children.forEach((c) => node.appendChild(c));
    return node;
  };
  const article = (noun) => (/^[aeiou]/.test(noun) ? "an " : "a ") + noun;
  const select = (name, options) => el("select", { "data-control": name }, options.map(([value, text]) => el("option", { value, text })));
  const labelled = (text, control, extra = []) => el("label", {}, [el("span", { text }), control, ...extra]);

  const controls = {
    cls: select("class", [["all", "all classes"], ...data.classes.map((c, i) => [String(i), c])]),
    outcome: select("outcome", [["all", "all"], ["correct", "correct"], ["wrong", "wrong"]]),
    image: select("image", []),
    layer: select("layer", data.layers.map((l, i) => [String(i), l])),
    head: select("head", data.heads.map((h, i) => [String(i), h])),
    cmap: select("colormap", Object.keys(data.colormaps).map((c) => [c, c])),
    scale: select("scale", [["minmax", "min-max (classic)"], ["shared", "shared by all maps"]]),
    amplify: el("input", { type: "range", min: "0.5", max: "5", step: "0.25", value: "2", "data-control": "amplify" }),
    opacity: el("input", { type: "range", min: "0", max: "1", step: "0.05", value: "0.5", "data-control": "opacity" }),
  };
  controls.layer.value = String(data.start_layer ?? rolloutLayer - 1);
  const canvases = { image: el("canvas", { width: 32, height: 32, "data-view": "image" }),
                     overlay: el("canvas", { width: 32, height: 32, "data-view": "overlay" }),
                     blend: el("canvas", { width: 32, height: 32, "data-view": "blend" }) };
  const colorbar = el("canvas", { width: 128, height: 1, class: "colorbar", "data-view": "colorbar" });
  const scale = el("div", { class: "scale" });
  const caption = el("div", { class: "caption" });
  const status = el("div", { class: "status", role: "status" });
  const prediction = el("table", { class: "prediction" });
  const amplifyValue = el("output", { text: "2" });
  const opacityValue = el("output", { text: "0.5" });
  root.appendChild(el("div", { class: "controls" }, [
    labelled("class", controls.cls), labelled("prediction", controls.outcome), labelled("image", controls.image),
    labelled("layer", controls.layer), labelled("head", controls.head), labelled("scale", controls.scale),
    labelled("colormap", controls.cmap),
    labelled("amplify", controls.amplify, [amplifyValue]), labelled("opacity", controls.opacity, [opacityValue]),
  ]));

  const uploads = []; // the reader's images, classified in the browser
  if (data.model) {
    window.vitTutorial.weightsUrl = data.model.url; // so that window.vitTutorial.classify works from the start
    const input = el("input", { type: "file", accept: "image/*", "data-control": "upload" });
    root.appendChild(el("div", { class: "upload" }, [
      labelled("your image", input),
      el("span", { class: "hint", text: "or drop or paste one here: the model runs in your browser" }),
    ]));
    input.addEventListener("change", () => {
      if (input.files.length) classifyFile(input.files[0]);
      input.value = ""; // so that the same file again is a new change
    });
    root.addEventListener("dragover", (event) => { event.preventDefault(); root.classList.add("dropping"); });
    root.addEventListener("dragleave", () => root.classList.remove("dropping"));
    root.addEventListener("drop", (event) => {
      event.preventDefault();
      root.classList.remove("dropping");
      if (event.dataTransfer.files.length) classifyFile(event.dataTransfer.files[0]);
    });
    // a paste belongs to this explorer only while the pointer is over it or it has the focus
    root.tabIndex = 0;
    document.addEventListener("paste", (event) => {
      if (!root.matches(":hover") && !root.contains(document.activeElement)) return;
      const file = [...(event.clipboardData?.files || [])][0];
      if (file) { event.preventDefault(); classifyFile(file); }
    });
  }
  root.appendChild(status);
  root.appendChild(caption);
  root.appendChild(el("div", { class: "panels" }, [
    el("figure", {}, [canvases.image, el("figcaption", { text: "image" })]),
    el("figure", { "data-panel": "overlay" }, [canvases.overlay, el("figcaption", { text: "classic overlay" })]),
    el("figure", {}, [canvases.blend, el("figcaption", { text: "map over image" }), colorbar, scale]),
    prediction,
  ]));

  // --- the reader's own image -------------------------------------------------------------------------
  // Scaled to 32x32 as `vit_tutorial.predict` does: transparent pixels on white, the centre square kept,
  // then resized with smoothing (the browser's resampling, close to but not exactly Pillow's bicubic).
  async function toImageData(file) {
    const bitmap = await createImageBitmap(file);
    const side = Math.min(bitmap.width, bitmap.height);
    const canvas = el("canvas", { width: 32, height: 32 });
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, 32, 32);
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(bitmap, (bitmap.width - side) / 2, (bitmap.height - side) / 2, side, side, 0, 0, 32, 32);
    bitmap.close();
    return ctx.getImageData(0, 0, 32, 32);
  }

  // The explorer's maps from the raw attentions: per layer the mean over heads and each head's CLS row,
  // then attention rollout (mean over heads, plus identity, rows renormalised, multiplied first to last),
  // as vit_tutorial.explorer.attention_maps computes them.
  function mapsFrom(attentions, [depth, heads, n]) {
    const at = (l, h, i, j) => attentions[((l * heads + h) * n + i) * n + j];
    const maps = [];
    let rollout = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
    for (let l = 0; l < depth; l++) {
      const perHead = Array.from({ length: heads }, (_, h) => Array.from({ length: n - 1 }, (_, j) => at(l, h, 0, j + 1)));
      const mean = perHead[0].map((_, j) => perHead.reduce((sum, row) => sum + row[j], 0) / heads);
      maps.push([mean, ...perHead]);
      const fused = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => {
        let sum = 0;
        for (let h = 0; h < heads; h++) sum += at(l, h, i, j);
        return sum / heads + (i === j ? 1 : 0);
      }));
      fused.forEach((row) => { const total = row.reduce((a, b) => a + b, 0); row.forEach((_, j) => { row[j] /= total; }); });
      rollout = fused.map((row) => rollout[0].map((_, j) => row.reduce((sum, v, k) => sum + v * rollout[k][j], 0)));
    }
    const row = rollout[0].slice(1);
    maps.push(Array.from({ length: heads + 1 }, () => row));
    return maps;
  }

  let uploadCount = 0;
  async function classifyFile(file) {
    status.textContent = "Running the model in your browser…";
    status.className = "status";
    let imageData;
    try {
      imageData = await toImageData(file);
    } catch (error) {
      status.textContent = `${file.name || "That file"} is not an image your browser can read; try a PNG or JPEG.`;
      status.className = "status problem";
      return;
    }
    try {
      const result = await window.vitTutorial.classify(imageData);
      const rgb = new Float32Array(32 * 32 * 3);
      for (let p = 0; p < 32 * 32; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = imageData.data[4 * p + c] / 255;
      const ranked = [...result.probabilities].map((p, c) => [c, p]).sort((a, b) => b[1] - a[1]).slice(0, 5);
      uploadCount += 1;
      uploads.unshift({ upload: true, name: `${uploadCount}: ${file.name || "pasted image"}`, rgb, label: -1,
                        top5: ranked, maps: mapsFrom(result.attentions, result.shape) });
      const loaded = result.loadMilliseconds !== undefined
        ? `loaded the model (${result.megabytes.toFixed(1)} MB of weights, once) in ${Math.round(result.loadMilliseconds)} ms, then ` : "";
      status.textContent = `The model in this page ${loaded}classified it in ${Math.round(result.milliseconds)} ms` +
        (result.digest === data.model.digest ? "." : " (a different checkpoint from the precomputed maps).");
      refill("upload:0");
    } catch (error) {
      status.textContent = `The in-browser model is not available here (${error.message}); the precomputed images still work.`;
      status.className = "status problem";
    }
  }

  // --- drawing -----------------------------------------------------------------------------------------
  const pixels = new Map(); // image key -> Float32Array of RGB in [0, 1]
  function loadPixels(key, im) {
    if (im.rgb) return Promise.resolve(im.rgb);
    if (pixels.has(key)) return Promise.resolve(pixels.get(key));
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const scratch = el("canvas", { width: img.width, height: img.height });
        const ctx = scratch.getContext("2d", { willReadFrequently: true });
        ctx.drawImage(img, 0, 0);
        const rgba = ctx.getImageData(0, 0, img.width, img.height).data;
        const rgb = new Float32Array(img.width * img.height * 3);
        for (let p = 0; p < img.width * img.height; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = rgba[4 * p + c] / 255;
        pixels.set(key, rgb);
        resolve(rgb);
      };
      img.onerror = reject;
      img.src = "data:image/png;base64," + im.png;
    });
  }

  function resizeBilinear(values, size) {
    const out = new Float32Array(size * size);
    const ratio = g / size;
    const source = (i) => Math.max((i + 0.5) * ratio - 0.5, 0);
    for (let y = 0; y < size; y++) {
      const sy = source(y), y0 = Math.floor(sy), y1 = Math.min(y0 + 1, g - 1), ly = sy - y0;
      for (let x = 0; x < size; x++) {
        const sx = source(x), x0 = Math.floor(sx), x1 = Math.min(x0 + 1, g - 1), lx = sx - x0;
        const top = (1 - lx) * values[y0 * g + x0] + lx * values[y0 * g + x1];
        const bottom = (1 - lx) * values[y1 * g + x0] + lx * values[y1 * g + x1];
        out[y * size + x] = (1 - ly) * top + ly * bottom;
      }
    }
    return out;
  }

  function normalise(map) {
    let lo = Infinity, hi = -Infinity;
    map.forEach((v) => { lo = Math.min(lo, v); hi = Math.max(hi, v); });
    // a constant map stays constant (as in attention.overlay_steps): rounding noise is not stretched
    const varies = hi - lo > 1e-6 * Math.max(Math.abs(lo), Math.abs(hi));
    return map.map((v) => (varies ? (v - lo) / (hi - lo) : 1));
  }

  // One scale for all of an image's maps: its largest patch weight over every layer and head (the rollout,
  // on a scale of its own, keeps its own largest weight), so a flat map looks flat.
  function sharedScale(im, rollout) {
    const maps = rollout ? [im.maps[rolloutLayer][0]] : im.maps.slice(0, rolloutLayer).flat();
    return Math.max(...maps.map((m) => Math.max(...m)));
  }

  function paint(canvas, rgb) {
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(32, 32);
    for (let p = 0; p < 32 * 32; p++) {
      for (let c = 0; c < 3; c++) image.data[4 * p + c] = Math.round(Math.min(Math.max(rgb[3 * p + c], 0), 1) * 255);
      image.data[4 * p + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  function paintColorbar(lut) {
    const ctx = colorbar.getContext("2d");
    const strip = ctx.createImageData(128, 1);
    for (let x = 0; x < 128; x++) {
      const colour = lut[Math.round((x / 127) * 255)];
      strip.data.set([colour[0], colour[1], colour[2], 255], 4 * x);
    }
    ctx.putImageData(strip, 0, 0);
  }

  // Images in the list: the reader's uploads first, then the precomputed test images that pass the filters.
  function candidates() {
    const keep = data.images.map((im, k) => k).filter((k) => {
      const im = data.images[k];
      const correct = im.top5[0][0] === im.label;
      return (controls.cls.value === "all" || im.label === Number(controls.cls.value)) &&
             (controls.outcome.value === "all" || (controls.outcome.value === "correct") === correct);
    });
    return [...uploads.map((_, u) => `upload:${u}`), ...keep.map(String)];
  }
  const entry = (key) => (key.startsWith("upload:") ? uploads[Number(key.slice(7))] : data.images[Number(key)]);

  function refill(choose) {
    const keys = candidates();
    const previous = choose ?? controls.image.value;
    controls.image.replaceChildren(...keys.map((key) => {
      const im = entry(key);
      return el("option", { value: key, text: im.upload ? `your image: ${im.name}` : `#${im.index} ${data.classes[im.label]}` });
    }));
    if (keys.includes(previous)) controls.image.value = previous;
    return render();
  }

  let renders = 0;
  async function render() {
    const layer = Number(controls.layer.value), rollout = layer === rolloutLayer;
    controls.head.disabled = rollout;
    amplifyValue.textContent = controls.amplify.value;
    opacityValue.textContent = controls.opacity.value;
    if (controls.image.value === "") {
      caption.textContent = "No image in this set matches the filters.";
      Object.values(canvases).forEach((c) => c.getContext("2d").clearRect(0, 0, c.width, c.height));
      prediction.replaceChildren();
      scale.textContent = "";
      root.classList.remove("flat");
      return;
    }
    const key = controls.image.value, im = entry(key);
    const rgb = await loadPixels(key, im);
    const head = rollout ? 0 : Number(controls.head.value);
    const raw = im.maps[layer][head];
    const resized = resizeBilinear(raw, 32);
    const shared = controls.scale.value === "shared";
    const top = shared ? sharedScale(im, rollout) : 0;
    const map = shared ? resized.map((v) => Math.min(v / top, 1)) : normalise(resized);
    const amplify = Number(controls.amplify.value), opacity = Number(controls.opacity.value);
    const lut = data.colormaps[controls.cmap.value];
    const overlay = new Float32Array(rgb.length), blended = new Float32Array(rgb.length);
    for (let p = 0; p < 32 * 32; p++) {
      const colour = lut[Math.round(map[p] * 255)];
      for (let c = 0; c < 3; c++) {
        overlay[3 * p + c] = rgb[3 * p + c] * map[p] * amplify;
        blended[3 * p + c] = (1 - opacity) * rgb[3 * p + c] + opacity * colour[c] / 255;
      }
    }
    paint(canvases.image, rgb);
    paint(canvases.overlay, overlay);
    paint(canvases.blend, blended);
    paintColorbar(lut);
    const lo = Math.min(...raw), hi = Math.max(...raw), spread = hi - lo;
    const flat = !rollout && spread < data.flat_threshold;
    root.classList.toggle("flat", flat);
    const range = shared ? `colour scale 0 to ${top.toFixed(3)} (shared)` : `colour scale ${lo.toFixed(3)} to ${hi.toFixed(3)} (min-max)`;
    const even = rollout ? "" : `; an even share is ${(1 / (g * g + 1)).toFixed(3)}`;
    scale.textContent = `raw weight ${lo.toFixed(3)} to ${hi.toFixed(3)}, spread ${spread.toFixed(4)}${even}; ${range}` +
      (flat ? `. Flat: the spread is below ${data.flat_threshold.toFixed(4)}, a tenth of an even share, ` +
        (shared ? "and the shared scale shows it even." : "and min-max stretches what is noise to full contrast.") : "");
    const predicted = im.top5[0][0];
    const where = rollout ? "attention rollout (all layers, heads averaged)" :
      `layer ${data.layers[layer]}, ${head === 0 ? "mean of the heads" : "head " + data.heads[head]}`;
    const verdict = im.upload ? [] :
      [el("span", { class: predicted === im.label ? "correct" : "wrong", text: predicted === im.label ? "(correct)" : "(wrong)" })];
    caption.replaceChildren(
      el("span", { text: im.upload ? `your image (${im.name}): predicted ${data.classes[predicted]} ` :
        `test image ${im.index}, ${article(data.classes[im.label])}: predicted ${data.classes[predicted]} ` }),
      ...verdict,
      el("span", { text: ` — ${where}` }),
    );
    prediction.replaceChildren(el("tr", {}, [el("th", { colspan: "3", text: "top-5 prediction" })]),
      ...im.top5.map(([c, p]) => el("tr", {}, [el("td", { text: data.classes[c] }),
        el("td", {}, [el("div", { class: "bar", style: `width:${Math.round(100 * p)}px` })]),
        el("td", { text: (100 * p).toFixed(1) + "%" })])));
    renders += 1;
    root.dataset.renders = String(renders);
  }

  [controls.cls, controls.outcome].forEach((c) => c.addEventListener("change", () => refill()));
  [controls.image, controls.layer, controls.head, controls.cmap, controls.scale].forEach((c) => c.addEventListener("change", render));
  [controls.amplify, controls.opacity].forEach((c) => c.addEventListener("input", render));
  refill(data.start_image === undefined ? undefined : String(data.start_image));
}
