// Static attention explorer: redraws precomputed CLS-attention maps in the browser, no kernel, no network.
// The drawing follows vit_tutorial.attention.overlay_steps: bilinear resize (align_corners=False),
// min-max normalisation (a flat map becomes all ones), image x map x amplify clipped to [0, 1].
function vitExplorer(root) {
  "use strict";
  const data = JSON.parse(root.querySelector(".vit-explorer-data").textContent);
  const g = data.grid;
  const el = (tag, attrs = {}, children = []) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    children.forEach((c) => node.appendChild(c));
    return node;
  };
  const select = (name, options) => el("select", { "data-control": name }, options.map(([value, text]) => el("option", { value, text })));
  const labelled = (text, control) => el("label", {}, [el("span", { text }), control]);

  const controls = {
    cls: select("class", [["all", "all classes"], ...data.classes.map((c, i) => [String(i), c])]),
    outcome: select("outcome", [["all", "all"], ["correct", "correct"], ["wrong", "wrong"]]),
    image: select("image", []),
    layer: select("layer", data.layers.map((l, i) => [String(i), l])),
    head: select("head", data.heads.map((h, i) => [String(i), h])),
    cmap: select("colormap", Object.keys(data.colormaps).map((c) => [c, c])),
    amplify: el("input", { type: "range", min: "0.5", max: "5", step: "0.25", value: "2", "data-control": "amplify" }),
    opacity: el("input", { type: "range", min: "0", max: "1", step: "0.05", value: "0.5", "data-control": "opacity" }),
  };
  controls.layer.value = String(data.layers.length - 2); // the last layer
  const canvases = { image: el("canvas", { width: 32, height: 32, "data-view": "image" }),
                     overlay: el("canvas", { width: 32, height: 32, "data-view": "overlay" }),
                     blend: el("canvas", { width: 32, height: 32, "data-view": "blend" }) };
  const caption = el("div", { class: "caption" });
  const prediction = el("table", { class: "prediction" });
  const amplifyValue = el("span", { text: "2" });
  const opacityValue = el("span", { text: "0.5" });
  root.appendChild(el("div", { class: "controls" }, [
    labelled("class", controls.cls), labelled("prediction", controls.outcome), labelled("image", controls.image),
    labelled("layer", controls.layer), labelled("head", controls.head), labelled("colormap", controls.cmap),
    labelled("amplify", controls.amplify), amplifyValue, el("span"),
    labelled("opacity", controls.opacity), opacityValue,
  ]));
  root.appendChild(caption);
  root.appendChild(el("div", { class: "panels" }, [
    el("figure", {}, [canvases.image, el("figcaption", { text: "image" })]),
    el("figure", {}, [canvases.overlay, el("figcaption", { text: "classic overlay" })]),
    el("figure", {}, [canvases.blend, el("figcaption", { text: "map over image" })]),
    prediction,
  ]));

  const pixels = new Map(); // image position -> Float32Array of RGB in [0, 1]
  function loadPixels(k) {
    if (pixels.has(k)) return Promise.resolve(pixels.get(k));
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onload = () => {
        const scratch = el("canvas", { width: img.width, height: img.height });
        const ctx = scratch.getContext("2d");
        ctx.drawImage(img, 0, 0);
        const rgba = ctx.getImageData(0, 0, img.width, img.height).data;
        const rgb = new Float32Array(img.width * img.height * 3);
        for (let p = 0; p < img.width * img.height; p++) for (let c = 0; c < 3; c++) rgb[3 * p + c] = rgba[4 * p + c] / 255;
        pixels.set(k, rgb);
        resolve(rgb);
      };
      img.onerror = reject;
      img.src = "data:image/png;base64," + data.images[k].png;
    });
  }

  function resizeBilinear(values, size) {
    const out = new Float32Array(size * size);
    const scale = g / size;
    const source = (i) => Math.max((i + 0.5) * scale - 0.5, 0);
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
    return map.map((v) => (hi > lo ? (v - lo) / (hi - lo) : 1));
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

  function candidates() {
    return data.images.map((im, k) => k).filter((k) => {
      const im = data.images[k];
      const correct = im.top5[0][0] === im.label;
      return (controls.cls.value === "all" || im.label === Number(controls.cls.value)) &&
             (controls.outcome.value === "all" || (controls.outcome.value === "correct") === correct);
    });
  }

  function refill() {
    const keep = candidates();
    const previous = controls.image.value;
    controls.image.replaceChildren(...keep.map((k) => el("option", { value: String(k), text: `#${data.images[k].index} ${data.classes[data.images[k].label]}` })));
    if (keep.map(String).includes(previous)) controls.image.value = previous;
    return render();
  }

  let renders = 0;
  async function render() {
    const rollout = Number(controls.layer.value) === data.layers.length - 1;
    controls.head.disabled = rollout;
    amplifyValue.textContent = controls.amplify.value;
    opacityValue.textContent = controls.opacity.value;
    if (controls.image.value === "") {
      caption.textContent = "No image in this set matches the filters.";
      return;
    }
    const k = Number(controls.image.value);
    const im = data.images[k];
    const rgb = await loadPixels(k);
    const head = rollout ? 0 : Number(controls.head.value);
    const map = normalise(resizeBilinear(im.maps[Number(controls.layer.value)][head], 32));
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
    const predicted = im.top5[0][0];
    caption.replaceChildren(
      el("span", { text: `test image ${im.index}, a ${data.classes[im.label]}: predicted ${data.classes[predicted]} ` }),
      el("span", { class: predicted === im.label ? "correct" : "wrong", text: predicted === im.label ? "(correct)" : "(wrong)" }),
      el("span", { text: ` — layer ${data.layers[Number(controls.layer.value)]}, head ${rollout ? "mean (rollout)" : data.heads[head]}` }),
    );
    prediction.replaceChildren(el("tr", {}, [el("th", { colspan: "3", text: "top-5 prediction" })]),
      ...im.top5.map(([c, p]) => el("tr", {}, [el("td", { text: data.classes[c] }),
        el("td", {}, [el("div", { class: "bar", style: `width:${Math.round(120 * p)}px` })]),
        el("td", { text: (100 * p).toFixed(1) + "%" })])));
    renders += 1;
    root.dataset.renders = String(renders);
  }

  [controls.cls, controls.outcome].forEach((c) => c.addEventListener("change", refill));
  [controls.image, controls.layer, controls.head, controls.cmap].forEach((c) => c.addEventListener("change", render));
  [controls.amplify, controls.opacity].forEach((c) => c.addEventListener("input", render));
  refill();
}
