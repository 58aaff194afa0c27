// The book's Vision Transformer in plain JavaScript: a line-by-line port of vit_tutorial/model.py, so the
// explorer can classify a reader's own image without a server. Tokens are (n, d) row-major Float32Arrays;
// a Linear layer's weight is (out, in), as in PyTorch. No library, no network: the weights come from a
// script that vit_tutorial.browser writes from the shipped checkpoint.
(function (global) {
  "use strict";

  const MEAN = [0.4914, 0.4822, 0.4465]; // vit_tutorial.data.CIFAR10_MEAN
  const STD = [0.247, 0.2435, 0.2616]; // vit_tutorial.data.CIFAR10_STD

  // float16 -> float32, once for all 65,536 bit patterns
  const HALF = (() => {
    const table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
      if (exponent === 0) table[h] = sign * 2 ** -14 * (fraction / 1024);
      else if (exponent === 31) table[h] = fraction ? NaN : sign * Infinity;
      else table[h] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
    }
    return table;
  })();

  // The payload of vit-weights.js: {config, dtype, tensors: [[name, shape, offset]], data: base64}.
  function decodeWeights(payload) {
    const bytes = Uint8Array.from(atob(payload.data), (c) => c.charCodeAt(0));
    const halves = new Uint16Array(bytes.buffer);
    const tensors = {};
    for (const [name, shape, offset] of payload.tensors) {
      const size = shape.reduce((a, b) => a * b, 1);
      const values = new Float32Array(size);
      for (let i = 0; i < size; i++) values[i] = HALF[halves[offset + i]];
      tensors[name] = values;
    }
    return { config: payload.config, digest: payload.digest, tensors };
  }

  // y = x W^T + b: x (n, inDim), W (outDim, inDim) -> (n, outDim)
  function linear(x, n, W, b, inDim, outDim) {
    const out = new Float32Array(n * outDim);
    for (let i = 0; i < n; i++) {
      const row = i * inDim;
      for (let o = 0; o < outDim; o++) {
        const w = o * inDim;
        let sum = b[o];
        for (let k = 0; k < inDim; k++) sum += x[row + k] * W[w + k];
        out[i * outDim + o] = sum;
      }
    }
    return out;
  }

  // LayerNorm over the last axis (eps 1e-5, biased variance), as torch.nn.LayerNorm
  function layerNorm(x, n, d, gamma, beta) {
    const out = new Float32Array(n * d);
    for (let i = 0; i < n; i++) {
      let mean = 0, variance = 0;
      for (let k = 0; k < d; k++) mean += x[i * d + k];
      mean /= d;
      for (let k = 0; k < d; k++) variance += (x[i * d + k] - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / d + 1e-5);
      for (let k = 0; k < d; k++) out[i * d + k] = (x[i * d + k] - mean) * scale * gamma[k] + beta[k];
    }
    return out;
  }

  // erf by the Chebyshev fit of Numerical Recipes (erfc, fractional error below 1.2e-7)
  function erf(x) {
    const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
    const erfc = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
      t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0 ? 1 - erfc : erfc - 1;
  }

  // nn.GELU(): the exact form, x * Phi(x)
  const gelu = (x) => 0.5 * x * (1 + erf(x / Math.SQRT2));

  // (3, H, W) -> (num_patches, p * p * 3), the einops pattern "c (y p1) (x p2) -> (y x) (p1 p2 c)"
  function patchify(pixels, size, p) {
    const grid = size / p, out = new Float32Array(grid * grid * p * p * 3);
    let o = 0;
    for (let h = 0; h < grid; h++)
      for (let w = 0; w < grid; w++)
        for (let p1 = 0; p1 < p; p1++)
          for (let p2 = 0; p2 < p; p2++)
            for (let c = 0; c < 3; c++) out[o++] = pixels[c * size * size + (h * p + p1) * size + (w * p + p2)];
    return out;
  }

  // Multi-head self-attention with the explicit softmax: (n, d) -> (n, d), and its weights (heads, n, n)
  function attention(x, n, d, heads, W, prefix) {
    const hd = d / heads, scale = 1 / Math.sqrt(hd);
    const qkv = linear(x, n, W[prefix + "qkv.weight"], W[prefix + "qkv.bias"], d, 3 * d); // (n, three h d)
    const weights = new Float32Array(heads * n * n), mixed = new Float32Array(n * d);
    const scores = new Float64Array(n);
    for (let h = 0; h < heads; h++) {
      const q = h * hd, k = d + h * hd, v = 2 * d + h * hd;
      for (let i = 0; i < n; i++) {
        let max = -Infinity;
        for (let j = 0; j < n; j++) {
          let dot = 0;
          for (let e = 0; e < hd; e++) dot += qkv[i * 3 * d + q + e] * qkv[j * 3 * d + k + e];
          scores[j] = dot * scale;
          max = Math.max(max, scores[j]);
        }
        let total = 0;
        for (let j = 0; j < n; j++) total += (scores[j] = Math.exp(scores[j] - max));
        for (let j = 0; j < n; j++) weights[(h * n + i) * n + j] = scores[j] / total;
        for (let e = 0; e < hd; e++) {
          let sum = 0;
          for (let j = 0; j < n; j++) sum += weights[(h * n + i) * n + j] * qkv[j * 3 * d + v + e];
          mixed[i * d + h * hd + e] = sum; // "b h n d -> b n (h d)"
        }
      }
    }
    return { out: linear(mixed, n, W[prefix + "proj.weight"], W[prefix + "proj.bias"], d, d), weights };
  }

  // ViT.forward(images, return_attention=True) for one normalised (3, H, W) image
  function forward(model, pixels) {
    const cfg = model.config, W = model.tensors;
    const d = cfg.dim, p = cfg.patch_size, grid = cfg.image_size / p, patches = grid * grid, n = patches + 1;
    const embedded = linear(patchify(pixels, cfg.image_size, p), patches, W["patch_embed.proj.weight"],
      W["patch_embed.proj.bias"], p * p * 3, d);
    let x = new Float32Array(n * d);
    for (let k = 0; k < d; k++) x[k] = W["cls_token"][k] + W["pos_embed"][k];
    for (let i = 0; i < patches * d; i++) x[d + i] = embedded[i] + W["pos_embed"][d + i];
    const attentions = new Float32Array(cfg.depth * cfg.heads * n * n);
    for (let b = 0; b < cfg.depth; b++) {
      const block = `blocks.${b}.`;
      const attended = attention(layerNorm(x, n, d, W[block + "norm1.weight"], W[block + "norm1.bias"]), n, d,
        cfg.heads, W, block + "attn.");
      attentions.set(attended.weights, b * cfg.heads * n * n);
      for (let i = 0; i < n * d; i++) x[i] += attended.out[i];
      const normed = layerNorm(x, n, d, W[block + "norm2.weight"], W[block + "norm2.bias"]);
      const hidden = linear(normed, n, W[block + "mlp.fc1.weight"], W[block + "mlp.fc1.bias"], d, cfg.mlp_dim);
      for (let i = 0; i < hidden.length; i++) hidden[i] = gelu(hidden[i]);
      const mlp = linear(hidden, n, W[block + "mlp.fc2.weight"], W[block + "mlp.fc2.bias"], cfg.mlp_dim, d);
      for (let i = 0; i < n * d; i++) x[i] += mlp[i];
    }
    x = layerNorm(x, n, d, W["norm.weight"], W["norm.bias"]);
    const logits = linear(x.subarray(0, d), 1, W["head.weight"], W["head.bias"], d, cfg.num_classes);
    const max = Math.max(...logits);
    const exps = logits.map((v) => Math.exp(v - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return { probabilities: exps.map((v) => v / total), attentions };
  }

  // A 32x32 ImageData (RGBA bytes) -> the normalised (3, 32, 32) input of vit_tutorial.data.normalize
  function normalise(imageData) {
    const size = imageData.width, pixels = new Float32Array(3 * size * size);
    for (let i = 0; i < size * size; i++)
      for (let c = 0; c < 3; c++) pixels[c * size * size + i] = (imageData.data[4 * i + c] / 255 - MEAN[c]) / STD[c];
    return pixels;
  }

  let loading = null;
  let loadTime = null; // how long the first load took: fetching the weights (unless inline) and decoding them
  // The weights, from the page if it carries them, else the weights script, injected once on first use; it
  // sets window.vitTutorialWeights.
  function loadModel(url) {
    if (loading) return loading;
    const started = performance.now();
    const decoded = (payload) => {
      const model = decodeWeights(payload);
      loadTime = { milliseconds: performance.now() - started, megabytes: payload.data.length / 1e6 };
      return model;
    };
    loading = new Promise((resolve, reject) => {
      if (global.vitTutorialWeights) return resolve(decoded(global.vitTutorialWeights));
      if (!url) return reject(new Error("this page carries no weights and names no weights file"));
      const script = document.createElement("script");
      script.src = url;
      script.onload = () => global.vitTutorialWeights
        ? resolve(decoded(global.vitTutorialWeights))
        : reject(new Error("the weights script defined no weights"));
      script.onerror = () => { loading = null; reject(new Error(`could not load the model's weights from ${url}`)); };
      document.head.appendChild(script);
    });
    return loading;
  }

  global.vitTutorial = {
    weightsUrl: null, // set by the explorer that embeds this script
    // Classify a 32x32 ImageData: {probabilities: Float32Array(10), attentions: Float32Array(depth*heads*17*17),
    // shape: [depth, heads, 17, 17], milliseconds}
    classify(imageData) {
      if (!imageData || imageData.width !== imageData.height || !imageData.data) {
        return Promise.reject(new Error("classify expects a square ImageData, such as a 32x32 canvas's"));
      }
      return loadModel(this.weightsUrl).then((model) => {
        if (imageData.width !== model.config.image_size) {
          throw new Error(`classify expects a ${model.config.image_size}x${model.config.image_size} ImageData`);
        }
        const started = performance.now();
        const result = forward(model, normalise(imageData));
        const n = (model.config.image_size / model.config.patch_size) ** 2 + 1;
        const loaded = loadTime; // reported with the first classification only
        loadTime = null;
        return { ...result, shape: [model.config.depth, model.config.heads, n, n], digest: model.digest,
                 milliseconds: performance.now() - started,
                 loadMilliseconds: loaded?.milliseconds, megabytes: loaded?.megabytes };
      });
    },
  };
})(window);
